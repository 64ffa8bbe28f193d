package brokertest

import (
	"math/rand/v2"
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
	ns := &NATSServer{t: t, port: StablePort(t), dir: t.TempDir()}
	ns.Start()
	t.Cleanup(ns.Stop)
	return ns
}

// StablePort returns a free port below the kernel's ephemeral range
// (32768 and up on Linux), for a server that a test stops and starts again
// on the same port (a broker, a proxy in front of one). A server stopped
// and started again on a port of that range may find it taken: the
// bridge, reconnecting to it meanwhile, can be given that very port as its
// own and connect to itself.
func StablePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port from 20000 to 31999")
	return 0
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

// Clients returns the number of client connections to the server.
func (ns *NATSServer) Clients() int { return ns.srv.NumClients() }

// SlowConsumers returns how many times the server cut a client connection
// that did not read what it was sent fast enough.
func (ns *NATSServer) SlowConsumers() uint64 { return ns.srv.NumSlowConsumersClients() }
