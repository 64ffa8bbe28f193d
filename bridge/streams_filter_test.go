package bridge_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/fakesource"
)

// mergedURL returns the URL of a merged stream of routes, each a path
// with an optional query of filter parameters.
func mergedURL(base string, routes ...string) string {
	q := url.Values{"route": routes}
	return base + bridge.StreamsPath + "?" + q.Encode()
}

// readMerged returns the next count events of s, as "TYPE DATA".
func (s *sseStream) readMerged(t *testing.T, count int) []string {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { s.resp.Body.Close() })
	defer timer.Stop()
	var got []string
	for len(got) < count {
		if len(s.evs) == 0 {
			n, err := s.resp.Body.Read(s.buf)
			s.evs = s.p.Feed(s.buf[:n])
			if err != nil && len(s.evs) == 0 {
				t.Fatalf("after %q: %v", got, err)
			}
			continue
		}
		got = append(got, s.evs[0].Type+" "+s.evs[0].Data)
		s.evs = s.evs[1:]
	}
	return got
}

// waitPart reads, dispatching no event, until the part of path in the
// stream's last event ID is want.
func (s *sseStream) waitPart(t *testing.T, path, want string) {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { s.resp.Body.Close() })
	defer timer.Stop()
	for bridge.StreamsIDPart(s.p.LastEventID, path) != want {
		n, err := s.resp.Body.Read(s.buf)
		if evs := s.p.Feed(s.buf[:n]); len(evs) > 0 {
			t.Fatalf("events while %s skips: %+v", path, evs)
		}
		if err != nil {
			t.Fatalf("the ID of %s did not move to the last skipped event: %v", path, err)
		}
	}
}

// TestStreamsRouteFilters: each route of a merged stream has its own
// filter, given in its route value: /orders only key k1 (types too),
// /payments all.
func TestStreamsRouteFilters(t *testing.T) {
	orders := fakesource.New("orders", 2, 1)
	payments := fakesource.New("payments", 1, 2)
	base, _ := serveStreams(t, bridge.Config{}, orders, payments)
	s := openFiltered(t, mergedURL(base, "/orders?key=k1&type=message", "/payments"), "")
	for i := range 20 {
		orders.AppendKeyed(i%2, fmt.Appendf(nil, "k%d", i%3), fmt.Appendf(nil, "o%d-k%d", i, i%3))
	}
	payments.Append(0, []byte("p0"))
	orders.AppendKeyed(0, []byte("k1"), []byte("last"))
	var want []string
	for i := range 20 {
		if i%3 == 1 {
			want = append(want, fmt.Sprintf("/orders o%d-k1", i))
		}
	}
	want = append(want, "/payments p0", "/orders last")
	got := s.readMerged(t, len(want))
	// Each route's events in order; the routes' interleaving is free.
	for _, route := range []string{"/orders ", "/payments "} {
		var g, w []string
		for _, e := range got {
			if strings.HasPrefix(e, route) {
				g = append(g, e)
			}
		}
		for _, e := range want {
			if strings.HasPrefix(e, route) {
				w = append(w, e)
			}
		}
		// Partitions interleave in the order of the broker: compare sets
		// of the filtered route, and its last.
		slices.Sort(g)
		slices.Sort(w)
		if !slices.Equal(g, w) {
			t.Errorf("%s: got %q, want %q", route, g, w)
		}
	}
}

// TestStreamsRouteFilterResume: while a route's filter skips a stretch,
// the merged stream's ID moves past it (a frame with the ID alone), so
// that a resume from there reads none of it, even without the filter.
func TestStreamsRouteFilterResume(t *testing.T) {
	orders := fakesource.New("orders", 1, 1)
	payments := fakesource.New("payments", 1, 2)
	cfg := bridge.Config{Backlog: 4} // a resume from before the stretch reads it from the broker
	base, _ := serveStreams(t, cfg, orders, payments)
	s := openFiltered(t, mergedURL(base, "/orders?key=k1", "/payments"), "")
	orders.AppendKeyed(0, []byte("k1"), []byte("first"))
	payments.Append(0, []byte("p0"))
	got := s.readMerged(t, 2)
	slices.Sort(got)
	if want := []string{"/orders first", "/payments p0"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	before := s.p.LastEventID

	// A route's own client sees the stretch, and its last ID.
	own := openFiltered(t, base+"/orders", "")
	for i := range 100 {
		orders.AppendKeyed(0, []byte("k2"), fmt.Appendf(nil, "skipped%d", i))
	}
	own.read(t, 100)
	s.waitPart(t, "/orders", own.p.LastEventID)
	after := s.p.LastEventID
	if p := bridge.StreamsIDPart(after, "/payments"); p == "" || p != bridge.StreamsIDPart(before, "/payments") {
		t.Errorf("the ID frame lost /payments' position: %q, was %q", p, bridge.StreamsIDPart(before, "/payments"))
	}

	orders.AppendKeyed(0, []byte("k1"), []byte("next"))
	payments.Append(0, []byte("p1"))
	want := []string{"/orders next", "/payments p1"}
	for _, q := range [][]string{{"/orders?key=k1", "/payments"}, {"/orders", "/payments"}} {
		r := openFiltered(t, mergedURL(base, q...), after)
		got := r.readMerged(t, 2)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%q from the ID after the stretch: got %q, want %q", q, got, want)
		}
	}
	// From the ID before the stretch, a route without the filter reads it:
	// the ID frame is what spared the resume.
	r := openFiltered(t, mergedURL(base, "/orders"), before)
	if got := r.readMerged(t, 1); got[0] != "/orders skipped0" {
		t.Errorf("from the ID before the stretch: %q, want /orders skipped0", got)
	}
}

// TestStreamsRouteFilterRefused: a route filter the route cannot serve, or
// an option that is not a filter, gets 400 with a short reason that
// names the route.
func TestStreamsRouteFilterRefused(t *testing.T) {
	base, _ := serveStreams(t, bridge.Config{}, fakesource.New("orders", 1, 1), fakesource.New("payments", 1, 2))
	for _, tc := range []struct{ route, reason string }{
		{"/orders?subject=a.b", "no NATS subjects"},
		{"/orders?type=", "want an event type"},
		{"/orders?key=" + strings.Repeat("k", 1000), "longer than 256 bytes"},
		{"/orders?since=0", "unknown option"},
		{"/orders?type=x&type=y&key=%zz", "malformed options"},
	} {
		resp, err := http.Get(mergedURL(base, tc.route, "/payments"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.reason) || !strings.Contains(string(body), `"/orders"`) || len(body) > 200 {
			t.Errorf("%.40q: status %d, %q; want 400, the route and %q", tc.route, resp.StatusCode, body, tc.reason)
		}
	}
}
