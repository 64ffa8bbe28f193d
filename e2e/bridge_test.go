package e2e

// esbridge processes, built once with the race detector, and an embedded
// nats-server that can be restarted on the same port and store.

import (
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/progtest"
)

// waitFor bounds every wait of these tests for something that should happen.
const waitFor = 20 * time.Second

// esbridgeBuild is the esbridge program, built at first use.
var esbridgeBuild = &progtest.Build{Race: true}

func TestMain(m *testing.M) {
	code := m.Run()
	esbridgeBuild.Remove()
	os.Exit(code)
}

// binary returns the esbridge binary, built with the race detector at first
// use.
func binary(t *testing.T) string { return esbridgeBuild.Path(t) }

// A bridge is a running esbridge process.
type bridge struct {
	*progtest.Proc
}

// startBridge starts esbridge with args and "-listen 127.0.0.1:0", and
// waits until it listens. At cleanup it is killed (SIGKILL: these tests
// do not check its shutdown) and, if the test failed, its output is
// logged.
func startBridge(t *testing.T, args ...string) *bridge {
	t.Helper()
	b := &bridge{progtest.Listen(t, binary(t), append([]string{"-listen", "127.0.0.1:0"}, args...))}
	t.Cleanup(b.Kill) // before progtest's cleanup, which would stop it gently
	return b
}

// waitReady polls /readyz until it answers 200.
func (b *bridge) waitReady() { b.WaitReadyz(http.StatusOK) }

// natsServer is an embedded nats-server with JetStream that can be stopped
// and started again on the same port and store.
type natsServer struct {
	*brokertest.NATSServer
	t *testing.T
}

// runNATS starts a nats-server, shut down at cleanup.
func runNATS(t *testing.T) *natsServer {
	t.Helper()
	return &natsServer{brokertest.RunNATS(t), t}
}

// runJetStream starts a nats-server and returns it with a JetStream
// context on a connection of the test's, closed at cleanup.
func runJetStream(t *testing.T) (*natsServer, jetstream.JetStream) {
	t.Helper()
	ns := runNATS(t)
	nc, err := nats.Connect("nats://" + ns.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return ns, js
}
