package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/fakesource"
	"github.com/esbridge/esbridge/internal/poll"
)

// expectGap checks that the next event is a gap with the reason.
func (c *sseClient) expectGap(reason string) {
	c.t.Helper()
	ev := c.next()
	var gap esource.Gap
	if ev.typ != esource.GapType || json.Unmarshal([]byte(ev.data), &gap) != nil || gap.Reason != reason {
		c.t.Fatalf("got %+v, want a gap %s", ev, reason)
	}
}

// TestSince: a client with since receives the stream from the first
// message stored at or after that time, from the broker when the log no
// longer holds it; an event ID wins over since; a route refuses a since
// past max_since, and one on a route without max_since and start=latest,
// with a gap and the live stream.
func TestSince(t *testing.T) {
	stream := fakesource.New("t", 1, 1)
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Millisecond)
	for i := range 10 {
		stream.AppendAt(0, base.Add(time.Duration(i)*time.Second), fmt.Appendf(nil, "m%d", i))
	}
	b, err := bridge.New(bridge.Config{Backlog: 2},
		bridge.Route{Path: "/capped", Source: stream, Options: bridge.Options{MaxSince: time.Hour}},
		bridge.Route{Path: "/latest", Source: stream},
		bridge.Route{Path: "/earliest", Source: stream, Options: bridge.Options{Earliest: true}},
	)
	if err != nil {
		t.Fatal(err)
	}
	runInMemory(t, b)
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	at := func(path string, since string) string {
		return srv.URL + path + "?since=" + url.QueryEscape(since)
	}
	rfc := func(d time.Duration) string { return base.Add(d).Format(time.RFC3339Nano) }

	// Every client starts where it asked; m10 is published once they all
	// have, and each then receives it live.
	var clients []func()
	check := func(url string, from int) {
		t.Helper()
		c := open(t, url, "")
		c.expect(from, 9)
		clients = append(clients, func() { c.expect(10, 10) })
	}
	check(at("/capped", rfc(3*time.Second)), 3)                                         // exactly at m3
	check(at("/capped", rfc(3500*time.Millisecond)), 4)                                 // between m3 and m4
	check(at("/capped", strconv.FormatInt(base.Add(5*time.Second).UnixMilli(), 10)), 5) // Unix ms
	check(at("/earliest", "0"), 0)                                                      // before the oldest
	check(at("/earliest", rfc(-time.Hour)), 0)

	// A time to come: the live stream, no gap.
	future := open(t, at("/earliest", time.Now().Add(time.Hour).Format(time.RFC3339)), "")
	clients = append(clients, func() { future.expect(10, 10) })

	// The event ID wins.
	m2 := open(t, at("/capped", rfc(2*time.Second)), "").expect(2, 2)
	resumed := open(t, at("/capped", rfc(0)), m2)
	resumed.expect(3, 9)
	clients = append(clients, func() { resumed.expect(10, 10) })

	// Refused: a gap that says so, then the live stream.
	for _, u := range []string{at("/capped", rfc(-time.Hour)), at("/latest", rfc(0))} {
		c := open(t, u, "")
		c.expectGap("since-refused")
		clients = append(clients, func() { c.expect(10, 10) })
	}

	// A malformed since is the page's bug: 400.
	for _, bad := range []string{"yesterday", "2024-13-01T00:00:00Z", "-5", "1969-01-01T00:00:00Z"} {
		resp, err := http.Get(at("/earliest", bad))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("since=%q: status %d, want 400", bad, resp.StatusCode)
		}
	}

	stream.Append(0, []byte("m10"))
	for _, f := range clients {
		f()
	}
}

// TestSinceCrowd: clients with the same since cost the broker one look-up
// and one catch-up reader.
func TestSinceCrowd(t *testing.T) {
	const clients, messages = 50, 40
	stream := fakesource.New("t", 1, 1)
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for i := range messages {
		stream.AppendAt(0, base.Add(time.Duration(i)*time.Millisecond), fmt.Appendf(nil, "m%d", i))
	}
	b, err := bridge.New(bridge.Config{Backlog: 4}, bridge.Route{Path: "/s", Source: stream, Options: bridge.Options{Earliest: true}})
	if err != nil {
		t.Fatal(err)
	}
	runInMemory(t, b)
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	_, _, opened := stream.Readers() // the live reader
	lookups := stream.Lookups()

	// The catch-up reader waits, before its first message, for the crowd
	// to board.
	stream.Hold()
	u := srv.URL + "/s?since=" + url.QueryEscape(base.Add(10*time.Millisecond).Format(time.RFC3339Nano))
	crowd := make([]*sseClient, clients)
	var wg sync.WaitGroup
	for i := range crowd {
		wg.Go(func() { crowd[i] = open(t, u, "") })
	}
	wg.Wait()
	poll.Until(t, 10*time.Second, "every client of the crowd is replayed", func() bool {
		return b.Stats(context.Background())[0].Replays >= clients
	})
	stream.Release()
	for _, c := range crowd {
		c.expect(10, messages-1)
	}
	if n := stream.Lookups() - lookups; n != 1 {
		t.Errorf("%d clients with the same since: %d look-ups, want 1", clients, n)
	}
	if _, _, all := stream.Readers(); all-opened != 1 {
		t.Errorf("%d clients with the same since: %d catch-up readers, want 1", clients, all-opened)
	}
}
