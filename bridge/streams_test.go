package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/fakesource"
)

// serveStreams runs a bridge with a route /NAME for each stream and
// returns its URL once it is ready, and a func that shuts it down (as a
// restart does), which the test's end calls too.
func serveStreams(t *testing.T, cfg bridge.Config, streams ...*fakesource.Stream) (string, func()) {
	t.Helper()
	var routes []bridge.Route
	for _, s := range streams {
		routes = append(routes, bridge.Route{Path: "/" + strings.TrimPrefix(s.Info().Stream, "fake/"), Source: s})
	}
	b, err := bridge.New(cfg, routes...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.Run(ctx) })
	srv := httptest.NewServer(b)
	stop := sync.OnceFunc(func() {
		b.Shutdown(context.Background())
		srv.Close()
		cancel()
		wg.Wait()
	})
	t.Cleanup(stop)
	waitReady(t, srv.URL)
	return srv.URL, stop
}

// appendMessages appends messages PREFIX<from>..PREFIX<to-1> to s, spread
// over its partitions as "PREFIX<i>@<partition>".
func appendMessages(s *fakesource.Stream, prefix string, from, to int) {
	parts := len(s.Lengths())
	for i := from; i < to; i++ {
		s.Append(i%parts, fmt.Appendf(nil, "%s%d@%d", prefix, i, i%parts))
	}
}

// merged reads a merged stream and checks, for each route, that every
// message comes once and in the order of its partition.
type merged struct {
	c    *sseClient
	seen map[string]bool
	last map[string]int // route and partition -> index of the last message
}

func openMerged(t *testing.T, url, lastID string) *merged {
	return &merged{c: open(t, url, lastID), seen: map[string]bool{}, last: map[string]int{}}
}

// expect reads messages until it has every one of want (route -> prefix
// and range), and fails on any other, a duplicate, or one out of order.
func (m *merged) expect(want map[string][2]int) {
	m.c.t.Helper()
	missing := 0
	for _, r := range want {
		missing += r[1] - r[0]
	}
	for missing > 0 {
		ev := m.c.next()
		r, ok := want[ev.typ]
		if !ok {
			m.c.t.Fatalf("event %+v: want one of the routes %v", ev, want)
		}
		var i, p int
		if _, err := fmt.Sscanf(ev.data, strings.TrimPrefix(ev.typ, "/")+"%d@%d", &i, &p); err != nil {
			m.c.t.Fatalf("event %+v: data is not a message of %s", ev, ev.typ)
		}
		key := fmt.Sprintf("%s@%d", ev.typ, p)
		switch {
		case m.seen[ev.data]:
			m.c.t.Fatalf("%s %s: a duplicate", ev.typ, ev.data)
		case i < r[0] || i >= r[1]:
			m.c.t.Fatalf("%s %s: want messages %d to %d", ev.typ, ev.data, r[0], r[1]-1)
		case m.last[key] > i:
			m.c.t.Fatalf("%s %s after message %d of its partition", ev.typ, ev.data, m.last[key])
		}
		m.seen[ev.data], m.last[key] = true, i
		missing--
	}
}

func TestStreamsMergedResume(t *testing.T) {
	orders := fakesource.New("orders", 1, 1)
	payments := fakesource.New("payments", 3, 2) // a vector of offsets
	cfg := bridge.Config{Backlog: 4}             // most resumes read the broker
	base, stop := serveStreams(t, cfg, orders, payments)

	c := openMerged(t, base+bridge.StreamsPath+"?route=/orders&route=/payments", "")
	appendMessages(orders, "orders", 0, 20)
	appendMessages(payments, "payments", 0, 30)
	c.expect(map[string][2]int{"/orders": {0, 20}, "/payments": {0, 30}})
	if c.c.last == "" {
		t.Fatal("no event ID")
	}

	// A second client, from the first's ID, on this instance.
	appendMessages(orders, "orders", 20, 25)
	c2 := openMerged(t, base+bridge.StreamsPath+"?route=/payments&route=/orders", c.c.last)
	c2.expect(map[string][2]int{"/orders": {20, 25}})
	c.expect(map[string][2]int{"/orders": {20, 25}})

	// The bridge restarts; meanwhile both routes go on. The client resumes
	// on a new instance, the routes listed the other way round.
	last := c.c.last
	stop()
	appendMessages(orders, "orders", 25, 40)
	appendMessages(payments, "payments", 30, 50)
	base2, _ := serveStreams(t, cfg, orders, payments)
	r := openMerged(t, base2+bridge.StreamsPath+"?route=/payments&route=/orders", last)
	r.expect(map[string][2]int{"/orders": {25, 40}, "/payments": {30, 50}})
	appendMessages(orders, "orders", 40, 42)
	appendMessages(payments, "payments", 50, 53)
	r.expect(map[string][2]int{"/orders": {40, 42}, "/payments": {50, 53}})

	// The ID of the merged stream, from one route alone: the other starts
	// live, as a new client of it would.
	one := openMerged(t, base2+bridge.StreamsPath+"?route=/orders", last)
	one.expect(map[string][2]int{"/orders": {25, 42}})
}

func TestStreamsIDOnlyAtOpen(t *testing.T) {
	// A client that reconnects before any event came still resumes each
	// route exactly: the stream's first frame carries their positions.
	orders := fakesource.New("orders", 1, 1)
	payments := fakesource.New("payments", 2, 2)
	appendMessages(orders, "orders", 0, 5)
	base, _ := serveStreams(t, bridge.Config{}, orders, payments)
	c := open(t, base+bridge.StreamsPath+"?route=/orders&route=/payments", "")
	// The first frames: a retry line, then the ID alone.
	for c.last == "" {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			c.last = strings.TrimSuffix(id, "\n")
		}
	}
	appendMessages(orders, "orders", 5, 8)
	appendMessages(payments, "payments", 0, 4)
	r := openMerged(t, base+bridge.StreamsPath+"?route=/orders&route=/payments", c.last)
	r.expect(map[string][2]int{"/orders": {5, 8}, "/payments": {0, 4}})
}

func TestStreamsMalformedID(t *testing.T) {
	orders := fakesource.New("orders", 1, 1)
	payments := fakesource.New("payments", 1, 2)
	base, _ := serveStreams(t, bridge.Config{}, orders, payments)
	for _, id := range []string{"nonsense", strings.Repeat("A", bridge.MaxStreamsIDLength+1)} {
		c := open(t, base+bridge.StreamsPath+"?route=/orders&route=/payments", id)
		// A gap for each route, in either order: the routes are served side by side.
		gaps := map[string]bool{}
		for range 2 {
			ev := c.next()
			var gap struct{ Reason, LastEventID string }
			if err := json.Unmarshal([]byte(ev.data), &gap); err != nil || gap.Reason != "malformed-id" || (ev.typ != "/orders:gap" && ev.typ != "/payments:gap") {
				t.Fatalf("ID %.20q: got %+v, want a malformed-id gap of type /orders:gap or /payments:gap", id, ev)
			}
			gaps[ev.typ] = true
			if len(gap.LastEventID) > esource.MaxEchoedID+len("…") {
				t.Errorf("the gap repeats %d bytes of the ID", len(gap.LastEventID))
			}
		}
		if len(gaps) != 2 {
			t.Fatalf("ID %.20q: gaps %v, want one of each route", id, gaps)
		}
	}
	// Then both go on live.
	c := openMerged(t, base+bridge.StreamsPath+"?route=/orders&route=/payments", "nonsense")
	c.c.next()
	c.c.next()
	appendMessages(orders, "orders", 0, 2)
	appendMessages(payments, "payments", 0, 2)
	c.expect(map[string][2]int{"/orders": {0, 2}, "/payments": {0, 2}})
}

func TestStreamsBadRequests(t *testing.T) {
	base, _ := serveStreams(t, bridge.Config{}, fakesource.New("orders", 1, 1), fakesource.New("payments", 1, 2))
	many := url.Values{}
	for i := range bridge.MaxStreamsRoutes + 1 {
		many.Add("route", fmt.Sprintf("/r%d", i))
	}
	for _, q := range []string{
		"",
		"route=/nowhere",
		"route=/orders&route=/orders",
		"route=orders",
		"route=/orders&x=1",
		"route=/orders&%zz",
		"route=%2Forders%3Ftype%3Dx&route=%2Forders%3Ftype%3Dy",
		"route=%2Forders%3Fsince%3D0",
		"route=/" + strings.Repeat("x", 9000),
		many.Encode(),
	} {
		resp, err := http.Get(base + bridge.StreamsPath + "?" + q)
		if err != nil {
			t.Fatal(err)
		}
		var body [200]byte
		n, _ := resp.Body.Read(body[:])
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || n == 0 || n > 150 {
			t.Errorf("%.40q: status %d, %d bytes %q; want 400 with a short reason", q, resp.StatusCode, n, body[:n])
		}
	}
}

func TestReservedPaths(t *testing.T) {
	for _, p := range []string{"/healthz", "/readyz", bridge.StreamsPath, "/_", "/_admin/x"} {
		_, err := bridge.New(bridge.Config{}, bridge.Route{Path: p, Source: fakesource.New("s", 1, 1)})
		if err == nil || !strings.Contains(err.Error(), "reserved for esbridge") {
			t.Errorf("route %s: got %v, want reserved for esbridge", p, err)
		}
	}
	if _, err := bridge.New(bridge.Config{}, bridge.Route{Path: "/x_", Source: fakesource.New("s", 1, 1)}); err != nil {
		t.Errorf("route /x_: %v", err)
	}
}

func TestStreamsSlowClient(t *testing.T) {
	// A merged client that reads nothing while far more than the log
	// holds is published: the routes are not held back, and it still
	// receives every message once, caught up from the broker.
	orders := fakesource.New("orders", 1, 1)
	payments := fakesource.New("payments", 3, 2)
	base, _ := serveStreams(t, bridge.Config{Backlog: 8}, orders, payments)
	slow := openMerged(t, base+bridge.StreamsPath+"?route=/orders&route=/payments", "")
	fast := openMerged(t, base+"/orders", "")
	appendMessages(orders, "orders", 0, 3000)
	appendMessages(payments, "payments", 0, 3000)
	for i := range 3000 {
		if ev := fast.c.next(); ev.data != fmt.Sprintf("orders%d@0", i) {
			t.Fatalf("a client of /orders got %+v, want orders%d", ev, i)
		}
	}
	slow.expect(map[string][2]int{"/orders": {0, 3000}, "/payments": {0, 3000}})
}
