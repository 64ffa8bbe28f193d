package e2e

// esbridge processes, built once with the race detector, and an embedded
// nats-server that can be restarted on the same port and store.

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
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
	t      *testing.T
	cmd    *exec.Cmd
	stderr *progtest.Buffer
	exited chan struct{} // closed when the process has exited
	addr   string        // host:port it listens on
}

// listenRE finds the address in the startup line.
var listenRE = regexp.MustCompile(`msg="esbridge listening" addr=(\S+)`)

// startBridge starts esbridge with args and "-listen 127.0.0.1:0", and
// waits until it listens. At cleanup it is stopped and, if the test failed,
// its stderr is logged.
func startBridge(t *testing.T, args ...string) *bridge {
	t.Helper()
	b := &bridge{t: t, stderr: &progtest.Buffer{}, exited: make(chan struct{})}
	b.cmd = exec.Command(binary(t), append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	// The race detector waits a second at exit unless told not to.
	b.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	b.cmd.Stderr = b.stderr
	b.cmd.Stdout = b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		b.signal(syscall.SIGKILL)
		<-b.exited
		if strings.Contains(b.stderr.String(), "DATA RACE") {
			t.Errorf("the race detector found a data race in esbridge")
		}
		if t.Failed() {
			t.Logf("stderr of esbridge %s:\n%s", strings.Join(args, " "), b.stderr.String())
		}
	})
	waitUntil(t, "esbridge listens", func() bool {
		if m := listenRE.FindStringSubmatch(b.stderr.String()); m != nil {
			b.addr = m[1]
			return true
		}
		select {
		case <-b.exited:
			t.Fatalf("esbridge %s exited before listening:\n%s", strings.Join(args, " "), b.stderr.String())
		default:
		}
		return false
	})
	return b
}

// signal sends sig to the process, if it still runs.
func (b *bridge) signal(sig os.Signal) {
	select {
	case <-b.exited:
	default:
		b.cmd.Process.Signal(sig)
	}
}

// kill ends the process with SIGKILL and waits until it has exited.
func (b *bridge) kill() {
	b.t.Helper()
	b.signal(syscall.SIGKILL)
	<-b.exited
}

// wait waits for the process to exit and returns its exit code.
func (b *bridge) wait() int {
	b.t.Helper()
	select {
	case <-b.exited:
		return b.cmd.ProcessState.ExitCode()
	case <-time.After(waitFor):
		b.t.Fatalf("esbridge did not exit within %v:\n%s", waitFor, b.stderr.String())
		return -1
	}
}

// waitReady polls /readyz until it answers 200.
func (b *bridge) waitReady() {
	b.t.Helper()
	waitUntil(b.t, "esbridge at "+b.addr+" is ready", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

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
