package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/fakesource"
	"github.com/esbridge/esbridge/internal/poll"
)

// TestStreamReset deletes the stream under a route and creates it again:
// the route is not ready while the stream is missing; a connected client
// gets one gap (stream-reset), then exactly the new stream's messages; a
// client resuming from an ID of the old stream that the log no longer
// holds gets the same.
func TestStreamReset(t *testing.T) {
	for _, partitions := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d partitions", partitions), func(t *testing.T) {
			stream := fakesource.New("t", partitions, 1)
			b, err := bridge.New(bridge.Config{Backlog: 8}, bridge.Route{Path: "/s", Source: stream})
			if err != nil {
				t.Fatal(err)
			}
			ctx, _ := runInMemory(t, b)

			live := tee(t, ctx, b, "")
			waitClient(t, b, "/s")
			appendN(stream, "old", partitions, 5)
			old := live.messages(t, "old", partitions, 5)

			stream.Delete()
			waitBridgeReady(t, b, false)
			stream.Create(partitions)
			appendN(stream, "new", partitions, 20)
			live.gap(t, "stream-reset")
			live.messages(t, "new", partitions, 20)
			waitBridgeReady(t, b, true)

			// The old stream's last ID is no longer in the log (8 events).
			resumed := tee(t, ctx, b, old)
			resumed.gap(t, "stream-reset")
			resumed.messages(t, "new", partitions, 20)
			appendN(stream, "more", partitions, 3)
			resumed.messages(t, "more", partitions, 3)
			live.messages(t, "more", partitions, 3)
		})
	}
}

// waitBridgeReady waits until b's readiness is ready.
func waitBridgeReady(t testing.TB, b *bridge.Bridge, ready bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, fmt.Sprintf("the bridge's Ready() is %v", ready), func() bool { return b.Ready() == ready })
}

// waitClient waits until the route at path of b has a client.
func waitClient(t testing.TB, b *bridge.Bridge, path string) {
	t.Helper()
	poll.Until(t, 10*time.Second, "route "+path+" has a client", func() bool { return bridge.Clients(b, path) > 0 })
}

// appendN appends n messages "<prefix>-<i>" spread over the partitions.
func appendN(s *fakesource.Stream, prefix string, partitions, n int) {
	for i := range n {
		s.Append(i%partitions, fmt.Appendf(nil, "%s-%d", prefix, i))
	}
}

// A teeClient collects what a client of a route receives.
type teeClient struct{ events chan esource.Event }

func tee(t *testing.T, ctx context.Context, b *bridge.Bridge, lastID string) *teeClient {
	t.Helper()
	seq, err := bridge.Tee(ctx, b, "/s", lastID)
	if err != nil {
		t.Fatal(err)
	}
	c := &teeClient{events: make(chan esource.Event, 1024)}
	go func() {
		for ev := range seq {
			if ev.Data != nil || ev.Type == esource.GapType {
				c.events <- ev
			}
		}
	}()
	return c
}

func (c *teeClient) next(t *testing.T) esource.Event {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event in 10 s")
		return esource.Event{}
	}
}

// messages checks that the next n events are the messages "<prefix>-<i>"
// for i below n, in each partition's order, and returns the last one's ID.
func (c *teeClient) messages(t *testing.T, prefix string, partitions, n int) string {
	t.Helper()
	next := make([]int, partitions) // per partition, the next i
	for p := range next {
		next[p] = p
	}
	var id string
	for range n {
		ev := c.next(t)
		var i int
		if _, err := fmt.Sscanf(fmt.Sprint(ev.Data), prefix+"-%d", &i); err != nil || ev.Type == esource.GapType {
			t.Fatalf("got %+v, want a message %s-…", ev, prefix)
		}
		if p := i % partitions; i != next[p] {
			t.Fatalf("got %s-%d, want %s-%d", prefix, i, prefix, next[p])
		}
		next[i%partitions] += partitions
		id = ev.ID
	}
	return id
}

// gap checks that the next event is a gap with reason.
func (c *teeClient) gap(t *testing.T, reason string) {
	t.Helper()
	ev := c.next(t)
	var g struct{ Reason string }
	if ev.Type != esource.GapType || json.Unmarshal([]byte(fmt.Sprint(ev.Data)), &g) != nil || g.Reason != reason {
		t.Fatalf("got %+v, want a gap %q", ev, reason)
	}
}
