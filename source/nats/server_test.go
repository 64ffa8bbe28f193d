package nats

import (
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/nats-io/nats.go"
)

// A testServer is an embedded nats-server with JetStream that can be
// stopped and started again on the same port and store.
type testServer struct {
	*brokertest.NATSServer
	t *testing.T
}

func runServer(t *testing.T) *testServer {
	t.Helper()
	return &testServer{brokertest.RunNATS(t), t}
}

// conn returns a client connection for publishing, closed at cleanup.
func (ts *testServer) conn() *nats.Conn {
	ts.t.Helper()
	nc, err := nats.Connect("nats://"+ts.Addr(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(nc.Close)
	return nc
}

// source returns a Source on ts, closed at cleanup. It connects at its
// first Open.
func (ts *testServer) source(cfg Config) *Source {
	ts.t.Helper()
	cfg.Servers = []string{ts.Addr()}
	s, err := New(cfg)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { s.Close() })
	return s
}

// waitStatus waits until the connection of s, opened, has status want,
// and checks that Connected (the readiness of its routes) tells whether it
// is CONNECTED.
func waitStatus(t *testing.T, s *Source, want nats.Status) {
	t.Helper()
	status := func() nats.Status {
		if nc := s.conn(); nc != nil {
			return nc.Status()
		}
		return nats.DISCONNECTED // not yet made
	}
	if !poll.Wait(10*time.Second, func() bool { return status() == want }) {
		t.Fatalf("status %v after 10s, want %v", status(), want)
	}
	if got := s.Connected(); got != (want == nats.CONNECTED) {
		t.Fatalf("status %v: Connected = %v", want, got)
	}
}
