package nats

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// TestStreamConnections checks which connection each reader uses: the
// live one for the route's live reader, the replay one for the others.
func TestStreamConnections(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 5)
	publish(t, js, "orders.x", 1, 3)
	s := ts.source(Config{Stream: "ORDERS"})
	on := func(r bridge.Reader) string { return r.(*streamReader).conn.role }

	before := ts.Clients() // the test's own
	if s.Connected() {
		t.Fatal("Connected before the first Open")
	}
	live := brokertest.Open(t, s, bridge.Start{Live: true})
	if got := on(live); got != "live" {
		t.Fatalf("live reader: on the %s connection", got)
	}
	if n := ts.Clients() - before; n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	for _, start := range []bridge.Start{{}, {Earliest: true}, {Position: bridge.Position{2}}, {Position: bridge.Position{4}}} {
		if got := on(brokertest.Open(t, s, start)); got != "replay" {
			t.Errorf("%+v: on the %s connection", start, got)
		}
	}
	// The bridge reopens its live reader where it stopped.
	live.Close()
	publish(t, js, "orders.x", 4, 2)
	r := brokertest.Open(t, s, bridge.Start{Position: bridge.Position{4}, Live: true})
	if got := on(r); got != "live" {
		t.Fatalf("live reader reopened at 4: on the %s connection", got)
	}
	read(t, r, 4, 5)

	// Core NATS has no history to replay, and one connection.
	ts2 := runServer(t)
	brokertest.Open(t, ts2.source(Config{Subject: "orders.>"}), bridge.Start{})
	if n := ts2.Clients(); n != 1 {
		t.Fatalf("core NATS: %d connections, want 1", n)
	}
}

// TestStreamReplayCannotCutLive opens a reader at the earliest of a stream
// of more than the 64 MB that nats-server queues for a client, on a replay
// connection that stops reading its socket, as a bridge busy with
// thousands of replays does: the server cuts the replay connection as a
// slow consumer, while the live reader reads every new message without an
// error and its connection stays up. The replay reader is read last, and
// reads every message in order, as the bridge does, reopening at its
// position after an error.
func TestStreamReplayCannotCutLive(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	const n, size = 96, 1_000_000 // 96 MB
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 1; i <= n; i++ {
		m := nats.NewMsg("orders.big")
		m.Data = make([]byte, size)
		copy(m.Data, fmt.Sprintf("m%d", i))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	s := ts.source(Config{Stream: "ORDERS"})
	stall := &stallDialer{limit: 4 << 20, release: make(chan struct{})}
	t.Cleanup(stall.Release) // before s.Close
	s.replayOpts = []nats.Option{nats.SetCustomDialer(stall)}
	live := brokertest.Open(t, s, bridge.Start{Live: true})
	replay := brokertest.Open(t, s, bridge.Start{Earliest: true})

	next := n + 1
	step := func() { // the live reader reads a new message
		t.Helper()
		publish(t, js, "orders.live", next, 1)
		read(t, live, uint64(next))
		next++
		if !s.Connected() {
			t.Fatal("not Connected")
		}
	}
	poll.Until(t, 30*time.Second, "the server cuts the replay connection (a slow consumer)", func() bool {
		if ts.SlowConsumers() > 0 {
			return true
		}
		step()
		return false
	})
	t.Logf("replay connection cut after %d live messages", next-n-1)
	stall.Release()
	poll.Until(t, 30*time.Second, "the replay connection reconnects", func() bool {
		if s.replay.nc.Stats().Reconnects > 0 {
			return true
		}
		step()
		return false
	})
	for range 10 {
		step()
	}
	if st, reconnects := s.live.nc.Status(), s.live.nc.Stats().Reconnects; st != nats.CONNECTED || reconnects != 0 {
		t.Fatalf("live connection: %v, %d reconnects", st, reconnects)
	}
	if c := ts.SlowConsumers(); c != 1 {
		t.Fatalf("%d slow consumers, want 1: the replay connection", c)
	}

	r := replay
	reopens := 0
	for want := uint64(1); want < uint64(next); {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		m, err := r.Next(ctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("replay: no message %d", want)
			}
			t.Logf("replay: %v; reopening at %v", err, r.Position())
			p := r.Position()
			r.Close()
			if r, err = reopen(s, p); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			reopens++
			continue
		}
		if m.Offset != want || !bytes.HasPrefix(m.Data, fmt.Appendf(nil, "m%d", want)) {
			t.Fatalf("replay: got offset %d (%.8q), want %d", m.Offset, m.Data, want)
		}
		want++
	}
	t.Logf("replay read %d messages, %d reopens", next-1, reopens)
}

// A stallDialer dials connections that stop reading their socket once
// they read limit bytes, until Release.
type stallDialer struct {
	limit   int64
	release chan struct{}
	once    sync.Once
}

func (d *stallDialer) Release() { d.once.Do(func() { close(d.release) }) }

func (d *stallDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, d: d}, nil
}

type stallConn struct {
	net.Conn
	d    *stallDialer
	read atomic.Int64
}

func (c *stallConn) Read(p []byte) (int, error) {
	if c.read.Load() >= c.d.limit {
		<-c.d.release
	}
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}
