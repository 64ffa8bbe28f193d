package esource

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/poll"
)

// testIDs is a MergedID for tests: "NAME=ID;NAME=ID", parts in order,
// those with an ID only, bounded to limit bytes when limit is set.
type testIDs struct {
	mu    sync.Mutex
	names []string
	ids   [][]byte
	limit int
}

func newTestIDs(names ...string) *testIDs {
	return &testIDs{names: names, ids: make([][]byte, len(names))}
}

func (m *testIDs) Set(i int, id []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ids[i] = append(m.ids[i][:0], id...)
	return true
}

func (m *testIDs) AppendID(dst []byte) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(dst)
	for i, id := range m.ids {
		if len(id) == 0 {
			continue
		}
		if len(dst) > n {
			dst = append(dst, ';')
		}
		dst = append(append(append(dst, m.names[i]...), '='), id...)
	}
	return dst, m.limit == 0 || len(dst)-n <= m.limit
}

// parse returns the part IDs of a merged ID, by name.
func (m *testIDs) parse(id string) map[string]string {
	parts := map[string]string{}
	for p := range strings.SplitSeq(id, ";") {
		if name, id, ok := strings.Cut(p, "="); ok {
			parts[name] = id
		}
	}
	return parts
}

// serveMerged serves a merged stream of the sources, named A, B, …, and
// returns its server. Each request's parts start after the part IDs of
// its Last-Event-ID; the request's context ends after ttl, if set.
func serveMerged(t *testing.T, ttl time.Duration, sources ...*EventSource) *httptest.Server {
	t.Helper()
	names := make([]string, len(sources))
	for i := range sources {
		names[i] = string(rune('A' + i))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ids := newTestIDs(names...)
		last := ids.parse(r.Header.Get("Last-Event-ID"))
		parts := make([]Part, len(sources))
		for i, es := range sources {
			parts[i] = Part{Source: es, Name: names[i], Start: es.StartAfter(last[names[i]])}
		}
		if ttl > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), ttl)
			defer cancel()
			r = r.WithContext(ctx)
		}
		ServeMerged(w, r, ids, parts...)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestMerged reads a merged stream as a browser would: each part's events
// typed with its name, their data intact, and an ID that resumes every
// part where it was.
func TestMerged(t *testing.T) {
	checkNoLeaks(t)
	a, b := newSource(t), newSource(t)
	srv := serveMerged(t, 0, a, b)
	s := connect(t, srv.Client(), srv.URL, "")
	waitClients(t, a, 1)
	waitClients(t, b, 1)

	steps := []struct {
		es       *EventSource
		ev       Event
		typ, id  string // as the browser sees it
		silently bool   // the event sets the ID only
	}{
		{a, Event{ID: "1", Data: "a1"}, "A", "A=1", false},
		{b, Event{ID: "1", Type: "created", Data: "b1\nsecond line"}, "B:created", "A=1;B=1", false},
		{a, Event{ID: "2"}, "", "A=2;B=1", true},
		{a, Event{Data: "no ID"}, "A", "A=2;B=1", false},
		{b, Event{ID: "2", Type: GapType, Data: `{"reason":"x"}`}, "B:gap", "A=2;B=2", false},
		{a, Event{ID: "3", Data: "a3"}, "A", "A=3;B=2", false},
	}
	for _, st := range steps {
		if err := st.es.Publish(st.ev); err != nil {
			t.Fatal(err)
		}
		if st.silently {
			continue
		}
		ev := s.next()
		if ev.Type != st.typ || ev.Data != st.ev.Data || ev.LastEventID != st.id {
			t.Fatalf("after publishing %+v the browser got %+v, want type %q, ID %q", st.ev, ev, st.typ, st.id)
		}
	}

	// A browser back with its last ID gets what it missed, once.
	publishN(t, a, 4, 5)
	publishN(t, b, 3, 3)
	r := connect(t, srv.Client(), srv.URL, "A=3;B=2")
	got := map[string]string{}
	for range 3 {
		ev := r.next()
		got[ev.Type] += ev.Data + " "
	}
	if got["A"] != "e4 e5 " || got["B"] != "e3 " {
		t.Fatalf("the resumed browser got %q, want e4 e5 of A and e3 of B", got)
	}
	publishN(t, a, 6, 6)
	if ev := r.next(); ev.Data != "e6" || ev.LastEventID != "A=6;B=3" {
		t.Fatalf("then %+v, want e6 with ID A=6;B=3", ev)
	}
}

// TestMergedConfig reads a merged stream's bytes: the retry line, the
// heartbeats and the drain of the first part's EventSource, the merged ID
// of where the parts start, and a stream that goes on while one part's
// EventSource shuts down, and ends once both have.
func TestMergedConfig(t *testing.T) {
	checkNoLeaks(t)
	a := newSource(t, WithRetry(1234*time.Millisecond), WithHeartbeat(20*time.Millisecond), WithDrainRetry(400*time.Millisecond))
	b := newSource(t, WithRetry(time.Second), WithHeartbeat(20*time.Second))
	publishN(t, a, 1, 2)
	srv := serveMerged(t, 0, a, b)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("the stream ended: %v", lines.Err())
		}
		return lines.Text()
	}
	for _, want := range []string{"retry: 1234", "", "id: A=2", ""} {
		if got := next(); got != want {
			t.Fatalf("the stream begins with %q, want %q", got, want)
		}
	}
	for range 3 {
		if got := next(); got != ":" && got != "" {
			t.Fatalf("an idle stream sent %q, want heartbeats", got)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	publishN(t, b, 1, 1)
	for got := next(); got != "id: A=2;B=1"; got = next() {
		if got != ":" && got != "" {
			t.Fatalf("after A shut down the stream sent %q, want B's event", got)
		}
	}
	if got := next(); got != "event: B" {
		t.Fatalf("B's event has %q, want its type", got)
	}
	next()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var last string
	for lines.Scan() {
		if l := lines.Text(); l != "" && l != ":" {
			last = l
		}
	}
	ms, err := strconv.Atoi(strings.TrimPrefix(last, "retry: "))
	if err != nil || ms < 200 || ms >= 600 {
		t.Fatalf("the stream ended with %q, want the drain's retry line, 200 to 600 ms", last)
	}
}

// TestMergedEnds checks that a merged stream ends as Serve's streams do:
// at the deadline of the request's context, after what was published by
// then, and when a client that does not read passes the write timeout.
func TestMergedEnds(t *testing.T) {
	checkNoLeaks(t)
	a, b := newSource(t, WithWriteTimeout(200*time.Millisecond), WithHeartbeat(100*time.Millisecond)), newSource(t)
	srv := serveMerged(t, 300*time.Millisecond, a, b)
	s := connect(t, srv.Client(), srv.URL, "")
	waitClients(t, b, 1)
	publishN(t, b, 1, 2)
	for i := 1; i <= 2; i++ {
		if ev := s.next(); ev.Data != "e"+strconv.Itoa(i) {
			t.Fatalf("got %+v, want e%d", ev, i)
		}
	}
	s.end()
	if s.err != nil {
		t.Fatalf("the stream ended with %v, want a clean end", s.err)
	}
	waitClients(t, a, 0)
	waitClients(t, b, 0)

	stalled := stalledClient(t, srv.Listener.Addr().String())
	defer stalled.Close()
	waitClients(t, a, 1)
	big := strings.Repeat("x", 64<<10)
	for i := range 100 {
		if err := a.Publish(Event{ID: strconv.Itoa(i), Data: big}); err != nil {
			t.Fatal(err)
		}
	}
	waitClients(t, a, 0)
	waitClients(t, b, 0)
}

// BenchmarkFanOut sends b.N events to 100 clients over HTTP/1.1: each a
// client of one EventSource (Serve), or of a merged stream of it and
// another (ServeMerged). Their ratio is what a merged client costs.
func BenchmarkFanOut(b *testing.B) {
	for _, merged := range []bool{false, true} {
		name := "Serve"
		if merged {
			name = "ServeMerged"
		}
		b.Run(name, func(b *testing.B) {
			const clients = 100
			opts := []Option{WithBacklog(1 << 20), WithBacklogBytes(1 << 30)}
			a, other := newSource(b, opts...), newSource(b, opts...)
			var h http.Handler = a
			if merged {
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ServeMerged(w, r, newTestIDs("A", "B"), Part{Source: a, Name: "A"}, Part{Source: other, Name: "B"})
				})
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			var wg sync.WaitGroup
			for range clients {
				resp, err := srv.Client().Get(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				wg.Go(func() {
					defer resp.Body.Close()
					br := bufio.NewReaderSize(resp.Body, 64<<10)
					for n := 0; n < b.N; {
						line, err := br.ReadSlice('\n')
						if err != nil {
							b.Errorf("after %d events: %v", n, err)
							return
						}
						if strings.HasPrefix(string(line), "data:") {
							n++
						}
					}
				})
			}
			if !poll.Wait(10*time.Second, func() bool { return a.Clients() == clients }) {
				b.Fatal("the clients did not connect")
			}
			data := strings.Repeat("x", 200)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := a.Publish(Event{ID: strconv.Itoa(i), Data: data}); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
		})
	}
}
