package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

func TestCoreOrder(t *testing.T) {
	ts := runServer(t)
	s := ts.source(Config{Subject: "orders.>"})
	if got, want := s.Info(), (bridge.Info{Stream: "nats/orders.>", Subject: "orders.>"}); got != want {
		t.Fatalf("Info = %+v, want %+v", got, want)
	}
	r := brokertest.Open(t, s, bridge.Start{})
	if r.Position() != nil {
		t.Fatalf("Position = %v, want nil", r.Position())
	}

	pub := ts.conn()
	const n = 200
	for i := range n {
		m := nats.NewMsg(fmt.Sprintf("orders.%c.x", 'a'+i%3))
		m.Data = fmt.Appendf(nil, "m%d", i)
		m.Header.Add("Trace-Id", fmt.Sprint(i))
		m.Header.Add("a", "1")
		m.Header.Add("a", "2")
		if err := pub.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish("other", []byte("not mine")); err != nil {
		t.Fatal(err)
	}
	wantHeaders := func(i int) []bridge.Header {
		return []bridge.Header{{Key: "Trace-Id", Value: fmt.Sprint(i)}, {Key: "a", Value: "1"}, {Key: "a", Value: "2"}}
	}
	for i := range n {
		m := brokertest.Next(t, r)
		if m.Subject != fmt.Sprintf("orders.%c.x", 'a'+i%3) || string(m.Data) != fmt.Sprintf("m%d", i) ||
			m.Offset != 0 || !slices.Equal(m.Headers, wantHeaders(i)) {
			t.Fatalf("message %d = %+v", i, m)
		}
	}
	brokertest.ExpectNothing(t, r)

	// Next goes on after returning ctx's error.
	if err := pub.Publish("orders.late", []byte("late")); err != nil {
		t.Fatal(err)
	}
	if m := brokertest.Next(t, r); string(m.Data) != "late" {
		t.Fatalf("after a timeout: %+v", m)
	}
}

func TestCoreNoHistory(t *testing.T) {
	ts := runServer(t)
	s := ts.source(Config{Subject: "x"})
	for _, start := range []bridge.Start{{Position: bridge.Position{0}}, {Earliest: true}} {
		r, err := s.Open(context.Background(), start)
		if !errors.Is(err, bridge.ErrNoHistory) {
			t.Errorf("Open(%+v) = %v, %v; want ErrNoHistory", start, r, err)
		}
	}
}

// TestCoreRestart restarts the server: the reader returns the messages it
// had received, ErrLost once, then the messages sent after the restart.
func TestCoreRestart(t *testing.T) {
	brokertest.CheckLeaks(t)
	ts := runServer(t)
	s := ts.source(Config{Subject: "ev.*"})
	r := brokertest.Open(t, s, bridge.Start{})
	other := brokertest.Open(t, s, bridge.Start{}) // never read before the outage
	pub := ts.conn()
	for i := range 3 {
		if err := pub.Publish("ev.a", fmt.Appendf(nil, "before%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	if m := brokertest.Next(t, r); string(m.Data) != "before0" {
		t.Fatalf("got %+v", m)
	}
	// Let the other two reach the source before the outage.
	var p, q int
	if !poll.Wait(5*time.Second, func() bool {
		p, _, _ = r.(*coreReader).sub.Pending()
		q, _, _ = other.(*coreReader).sub.Pending()
		return p == 2 && q == 3
	}) {
		t.Fatalf("pending %d and %d after 5s, want 2 and 3", p, q)
	}

	ts.Stop()
	waitStatus(t, s, nats.RECONNECTING)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.Open(ctx, bridge.Start{}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Fatalf("Open while down: %v, want ErrUnavailable", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Open while down waited for its deadline")
	}

	ts.Start()
	waitStatus(t, s, nats.CONNECTED)
	if err := s.live.nc.Flush(); err != nil { // the subscriptions are renewed
		t.Fatal(err)
	}
	waitStatusConn(t, pub)
	for i := range 2 {
		if err := pub.Publish("ev.b", fmt.Appendf(nil, "after%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	readers := []struct {
		r    bridge.Reader
		want []string
	}{
		{r, []string{"before1", "before2", "lost", "after0", "after1"}},
		{other, []string{"before0", "before1", "before2", "lost", "after0", "after1"}},
	}
	for _, rd := range readers {
		var got []string
		for range rd.want {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m, err := rd.r.Next(ctx)
			cancel()
			switch {
			case errors.Is(err, bridge.ErrLost):
				got = append(got, "lost")
			case err != nil:
				t.Fatal(err)
			default:
				got = append(got, string(m.Data))
			}
		}
		if !slices.Equal(got, rd.want) {
			t.Errorf("got %q, want %q", got, rd.want)
		}
		brokertest.ExpectNothing(t, rd.r)
	}
	if r2 := brokertest.Open(t, s, bridge.Start{}); r2 == nil {
		t.Fatal("no reader after the restart")
	}
}

func waitStatusConn(t *testing.T, nc *nats.Conn) {
	t.Helper()
	poll.Until(t, 10*time.Second, "the publisher reconnects", nc.IsConnected)
}

// TestCoreDown opens a source while the server is down: New succeeds, Open
// returns ErrUnavailable until the server is up.
func TestCoreDown(t *testing.T) {
	ts := runServer(t)
	ts.Stop()
	s, err := New(Config{Servers: []string{ts.Addr()}, Subject: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.Open(ctx, bridge.Start{}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Fatalf("Open while down: %v, want ErrUnavailable", err)
	}
	ts.Start()
	waitStatus(t, s, nats.CONNECTED)
	r := brokertest.Open(t, s, bridge.Start{})
	if err := ts.conn().Publish("x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m := brokertest.Next(t, r); string(m.Data) != "hi" {
		t.Fatalf("got %+v", m)
	}
}

// TestCoreSlow reads too slowly: the messages the client dropped are
// reported with ErrLost, once.
func TestCoreSlow(t *testing.T) {
	ts := runServer(t)
	s := ts.source(Config{Subject: "x"})
	r := brokertest.Open(t, s, bridge.Start{})
	if err := r.(*coreReader).sub.SetPendingLimits(10, -1); err != nil {
		t.Fatal(err)
	}
	pub := ts.conn()
	for i := range 50 {
		if err := pub.Publish("x", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the subscription drops 40 messages", func() bool {
		d, _ := r.(*coreReader).sub.Dropped()
		return d == 40
	})
	lost, got := 0, 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := r.Next(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		switch {
		case errors.Is(err, bridge.ErrLost):
			lost++
		case err != nil:
			t.Fatal(err)
		default:
			got++
		}
	}
	if lost != 1 || got != 10 {
		t.Errorf("%d ErrLost and %d messages, want 1 and 10", lost, got)
	}
}

// TestConnectsAtFirstOpen checks the rule of bridge.Source: New connects
// to nothing, the first Open does.
func TestConnectsAtFirstOpen(t *testing.T) {
	ts := runServer(t)
	s := ts.source(Config{Subject: "x"})
	if n := ts.Clients(); n != 0 || s.Connected() {
		t.Fatalf("after New: %d clients on the server, Connected %v; want none", n, s.Connected())
	}
	brokertest.Open(t, s, bridge.Start{})
	if n := ts.Clients(); n != 1 || !s.Connected() {
		t.Fatalf("after Open: %d clients on the server, Connected %v; want 1", n, s.Connected())
	}
}
