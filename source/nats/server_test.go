package nats

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// A testServer is an embedded nats-server with JetStream that can be
// stopped and started again on the same port and store.
type testServer struct {
	t    *testing.T
	port int
	dir  string
	srv  *server.Server
}

func runServer(t *testing.T) *testServer {
	t.Helper()
	ts := &testServer{t: t, port: -1, dir: t.TempDir()}
	ts.start()
	ts.port = ts.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) start() {
	ts.t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: ts.port, JetStream: true, StoreDir: ts.dir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		ts.t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		ts.t.Fatal("nats-server not ready")
	}
	ts.srv = srv
}

func (ts *testServer) stop() {
	if ts.srv != nil {
		ts.srv.Shutdown()
		ts.srv.WaitForShutdown()
		ts.srv = nil
	}
}

func (ts *testServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port)) }

// conn returns a client connection for publishing, closed at cleanup.
func (ts *testServer) conn() *nats.Conn {
	ts.t.Helper()
	nc, err := nats.Connect("nats://"+ts.addr(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(nc.Close)
	return nc
}

// source returns a Source on ts, closed at cleanup.
func (ts *testServer) source(cfg Config) *Source {
	ts.t.Helper()
	cfg.Servers = []string{ts.addr()}
	s, err := New(cfg)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { s.Close() })
	waitStatus(ts.t, s, nats.CONNECTED)
	return s
}

func waitStatus(t *testing.T, s *Source, want nats.Status) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.nc.Status() != want {
		if time.Now().After(deadline) {
			t.Fatalf("status %v, want %v", s.nc.Status(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
