package brokertest

import (
	"net"
	"strconv"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// A NATSServer is an embedded nats-server with JetStream on 127.0.0.1,
// which a test can stop and start again on the same port and store.
type NATSServer struct {
	t    testing.TB
	port int
	dir  string
	srv  *server.Server
}

// RunNATS starts a NATSServer on a free port, with a store in a temporary
// directory, and shuts it down at cleanup.
func RunNATS(t testing.TB) *NATSServer {
	t.Helper()
	ns := &NATSServer{t: t, port: -1, dir: t.TempDir()}
	ns.Start()
	ns.port = ns.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(ns.Stop)
	return ns
}

// Start starts the server, on its port and store.
func (ns *NATSServer) Start() {
	ns.t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: ns.port, JetStream: true, StoreDir: ns.dir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		ns.t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(Timeout) {
		ns.t.Fatal("nats-server not ready")
	}
	ns.srv = srv
}

// Stop shuts the server down, if it runs.
func (ns *NATSServer) Stop() {
	if ns.srv != nil {
		ns.srv.Shutdown()
		ns.srv.WaitForShutdown()
		ns.srv = nil
	}
}

// Restart stops the server and starts it again on the same port and store.
func (ns *NATSServer) Restart() {
	ns.t.Helper()
	ns.Stop()
	ns.Start()
}

// Addr returns the server's HOST:PORT.
func (ns *NATSServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ns.port)) }

// URL returns the server's nats:// URL.
func (ns *NATSServer) URL() string { return "nats://" + ns.Addr() }
