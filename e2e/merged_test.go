package e2e

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/internal/poll"
)

// One page, one native EventSource on a merged stream of two JetStream
// routes, listening with addEventListener("/orders") and
// addEventListener("/payments"). The bridge is killed and started again
// while both routes go on: the browser reconnects by itself with the
// merged ID and records every message of each route once, in order.
func TestMergedStreamsRestart(t *testing.T) {
	t.Parallel()
	br := launchBrowser(t)
	ns, js := runJetStream(t)
	for _, name := range []string{"ORDERS", "PAYMENTS"} {
		if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}}); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{
		"-route", "/orders=jetstream://" + ns.Addr() + "/ORDERS",
		"-route", "/payments=jetstream://" + ns.Addr() + "/PAYMENTS",
		"-backlog", "8", // most of the resume comes from the broker
	}
	b := startBridge(t, args...)
	b.waitReady()
	px := startProxy(t, b.Addr)
	pg := br.open(px.pageURL("/_streams?route=/orders&route=/payments") + "&types=" + url.QueryEscape("/orders,/payments"))
	poll.Until(t, waitFor, "the page's stream is open", func() bool { return count(pg.recorded(), "open") == 1 })

	// Both routes are published to all along, every 10 ms.
	var mu sync.Mutex
	published := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, route := range []string{"orders", "payments"} {
		wg.Go(func() {
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				if _, err := js.Publish(t.Context(), route+".x", fmt.Appendf(nil, "%s-%d", route, i)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				published[route] = i
				mu.Unlock()
			}
		})
	}
	poll.Until(t, waitFor, "the page has 20 events", func() bool { return count(pg.recorded(), "event") >= 20 })
	b.Kill()
	b2 := startBridge(t, args...)
	b2.waitReady()
	px.setBackends(b2.Addr)
	poll.Until(t, waitFor, "the page's stream is open again", func() bool { return count(pg.recorded(), "open") >= 2 })
	poll.Until(t, waitFor, "the page has 20 more events", func() bool { return count(pg.recorded(), "event") >= 60 })
	close(stop)
	wg.Wait()

	// Every message of each route once, in order, with the route's event type.
	want := func() int { mu.Lock(); defer mu.Unlock(); return published["orders"] + published["payments"] }()
	poll.Until(t, waitFor, "the page has every message", func() bool { return count(pg.recorded(), "event") >= want })
	rs := pg.recorded()
	got := map[string][]string{}
	for _, r := range rs {
		if r.Kind == "event" {
			got[r.Type] = append(got[r.Type], r.Data)
		}
	}
	for _, route := range []string{"orders", "payments"} {
		var w []string
		for i := 1; i <= published[route]; i++ {
			w = append(w, route+"-"+strconv.Itoa(i))
		}
		if !slices.Equal(got["/"+route], w) {
			t.Errorf("events of type /%s: %d, want %s-1..%s-%d each once, in order:\n%s", route, len(got["/"+route]), route, route, published[route], describe(rs))
		}
	}
	if n := len(got); n != 2 {
		t.Errorf("events of %d types, want /orders and /payments only:\n%s", n, describe(rs))
	}
	// One EventSource: every stream the proxy passed on is the merged one,
	// and the second resumed with an ID.
	streams := px.logged()
	for _, s := range streams {
		if s.path != "/_streams" {
			t.Errorf("a request for %s, want %s only", s.path, "/_streams")
		}
	}
	if len(streams) < 2 || streams[len(streams)-1].lastEventID == "" {
		t.Errorf("%d streams, the last without Last-Event-ID; want a resume", len(streams))
	}
}
