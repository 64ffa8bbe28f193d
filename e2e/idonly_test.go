package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/poll"
)

// An event with an ID and no data (an id: line alone) fires nothing in the
// browser but moves its last event ID: the next reconnect sends it.
//
// A test server serves one EventSource, then another: the first sends
// "one" (ID e1) and the ID e2 alone, then shuts down, which ends the
// stream; the browser reconnects to the second, which holds e1, e2 and
// "three" (e3), and resumes after the ID it is sent.
func TestIDOnlyEvent(t *testing.T) {
	t.Parallel()
	br := launchBrowser(t)
	first, err := esource.New(esource.WithDrainRetry(100 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	second, err := esource.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	var current atomic.Pointer[esource.EventSource]
	current.Store(first)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current.Load().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	px := startProxy(t, srv.Listener.Addr().String())
	pg := br.open(px.pageURL("/events"))
	// Open once the client is registered: it gets what is published next.
	poll.Until(t, waitFor, "the page's EventSource is open", func() bool { return count(pg.recorded(), "open") > 0 })

	events := []esource.Event{{ID: "e1", Data: "one"}, {ID: "e2"}, {ID: "e3", Data: "three"}}
	for _, ev := range events {
		if err := second.Publish(ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range events[:2] {
		if err := first.Publish(ev); err != nil {
			t.Fatal(err)
		}
	}
	current.Store(second)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	want := []record{
		{Kind: "event", Type: "message", ID: "e1", Data: "one"},
		{Kind: "event", Type: "message", ID: "e3", Data: "three"},
	}
	var got []record
	poll.Until(t, waitFor, "the page has two messages", func() bool {
		got = nil
		for _, r := range pg.recorded() {
			if r.Kind == "event" {
				got = append(got, r)
			}
		}
		return len(got) >= len(want)
	})
	if !slices.Equal(got, want) {
		t.Errorf("the page recorded %v, want %v", got, want)
	}
	streams := px.logged()
	if len(streams) != 2 || streams[1].lastEventID != "e2" {
		t.Fatalf("want two requests, the second with Last-Event-ID e2; got:\n%s", px.describe())
	}
	if body, _ := streams[0].state(); !strings.Contains(body, "\n\nid: e2\n\n") {
		t.Errorf("the first stream has no frame of an id line alone:\n%s", body)
	}
}
