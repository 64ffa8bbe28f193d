package esource

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/esbridge/esbridge/internal/ssetest"
)

// typeFilter lets through the events of its types, and counts its calls.
type typeFilter struct {
	types []string
	calls *atomic.Int64
}

func (f typeFilter) Key() string { return strings.Join(f.types, ",") }

func (f typeFilter) Match(typ string, _ []string) bool {
	if f.calls != nil {
		f.calls.Add(1)
	}
	return slices.Contains(f.types, typ)
}

// serveFiltered serves es, each client filtered on the event types in its
// query parameter types (comma-separated), if any.
func serveFiltered(t *testing.T, es *EventSource, calls *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var f Filter
		if v := r.URL.Query().Get("types"); v != "" {
			f = typeFilter{types: strings.Split(v, ","), calls: calls}
		}
		es.Serve(w, r, es.StartOf(r), f)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// publishTyped publishes events from..to, event n of type "t<n%mod>" with
// data "e<n>".
func publishTyped(t testing.TB, es *EventSource, from, to, mod int) {
	t.Helper()
	for i := from; i <= to; i++ {
		id := strconv.Itoa(i)
		if err := es.Publish(Event{ID: id, Type: "t" + strconv.Itoa(i%mod), Data: "e" + id}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFilteredClients: a filtered client receives the events of its types,
// and gap events; an unfiltered one receives every event.
func TestFilteredClients(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t)
	srv := serveFiltered(t, es, nil)
	odd := connect(t, srv.Client(), srv.URL+"?types=t1", "")
	all := connect(t, srv.Client(), srv.URL, "")
	waitClients(t, es, 2)
	publishTyped(t, es, 1, 10, 2)
	if err := es.Publish(Gap{Reason: "test"}.Event("11")); err != nil {
		t.Fatal(err)
	}
	publishTyped(t, es, 12, 13, 2)
	for _, want := range []string{"1", "3", "5", "7", "9", "11", "13"} {
		if ev := odd.next(); ev.LastEventID != want || (want != "11" && ev.Data != "e"+want) {
			t.Fatalf("filtered client got %+v, want event %s", ev, want)
		}
	}
	for i := 1; i <= 13; i++ {
		if ev := all.next(); ev.LastEventID != strconv.Itoa(i) {
			t.Fatalf("unfiltered client got %+v, want event %d", ev, i)
		}
	}
}

// TestFilterMatchedOncePerDistinctFilter: clients with the same filter
// share its matching, once per event; clients beyond MaxFilters distinct
// filters match for themselves, and receive the same events.
func TestFilterMatchedOncePerDistinctFilter(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t)
	var calls atomic.Int64
	srv := serveFiltered(t, es, &calls)
	const perFilter, events = 20, 100
	var streams []*stream
	for range perFilter {
		streams = append(streams, connect(t, srv.Client(), srv.URL+"?types=t0", ""))
		streams = append(streams, connect(t, srv.Client(), srv.URL+"?types=t1", ""))
	}
	waitClients(t, es, 2*perFilter)
	publishTyped(t, es, 1, events, 2)
	for i, s := range streams {
		for n := 2 - i%2; n <= events; n += 2 {
			if ev := s.next(); ev.LastEventID != strconv.Itoa(n) {
				t.Fatalf("client %d got %+v, want event %d", i, ev, n)
			}
		}
	}
	if got, want := calls.Load(), int64(2*events); got != want {
		t.Errorf("%d calls of Match for %d clients of 2 filters and %d events, want %d", got, len(streams), events, want)
	}

	// MaxFilters more distinct filters: the last takes no slot.
	var many []*stream
	for i := range MaxFilters {
		many = append(many, connect(t, srv.Client(), fmt.Sprintf("%s?types=t%d,x%d", srv.URL, 100+i, i), ""))
	}
	waitClients(t, es, 2*perFilter+MaxFilters)
	for i, s := range many {
		id := strconv.Itoa(1000 + i)
		if err := es.Publish(Event{ID: id, Type: "t" + strconv.Itoa(100+i), Data: "x"}); err != nil {
			t.Fatal(err)
		}
		if ev := s.next(); ev.LastEventID != id {
			t.Fatalf("client of filter %d got %+v, want event %s", i, ev, id)
		}
	}
}

// TestProgressFrames: a client whose filter skips events is sent, at most
// once per progress interval while it skips, a frame with only an id line:
// the browser dispatches nothing, and its last event ID moves to the last
// event skipped.
func TestProgressFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		es, err := New(WithProgressInterval(time.Second), WithRetry(time.Second), WithHeartbeat(0))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		rec := &recorder{header: http.Header{}}
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
		go es.Serve(rec, req, es.StartOf(req), typeFilter{types: []string{"t1"}})
		synctest.Wait()

		// 10 s of events of type t0, one each 10 ms, then one of type t1.
		for i := 1; i <= 1000; i++ {
			publishTyped(t, es, 2*i, 2*i, 2)
			time.Sleep(10 * time.Millisecond)
		}
		synctest.Wait()
		p := ssetest.NewParser()
		if evs := p.Feed([]byte(rec.String())); len(evs) != 0 {
			t.Fatalf("events dispatched for skipped events: %+v", evs)
		}
		frames := strings.Count(rec.String(), "id: ")
		if frames < 9 || frames > 10 {
			t.Errorf("%d progress frames in 10 s of skipped events, want one a second", frames)
		}
		// The last skipped stretch is told within an interval, even when
		// no event follows.
		time.Sleep(time.Second)
		synctest.Wait()
		p = ssetest.NewParser()
		p.Feed([]byte(rec.String()))
		if p.LastEventID != "2000" {
			t.Errorf("last event ID %q a second after the last skipped event, want 2000", p.LastEventID)
		}
		publishTyped(t, es, 2001, 2001, 2)
		synctest.Wait()
		if evs := ssetest.NewParser().Feed([]byte(rec.String())); len(evs) != 1 || evs[0].LastEventID != "2001" {
			t.Errorf("after an event of the filter's type: %+v, want it alone", evs)
		}
		cancel()
		es.Shutdown(context.Background())
	})
}

// TestFilteredResumeAfterSkippedStretch: a filtered client that reconnects
// with the last event ID its progress frames gave it receives no skipped
// event again and none of its own twice: from the log, and through the
// History, whose replay is filtered too and sends progress frames.
func TestFilteredResumeAfterSkippedStretch(t *testing.T) {
	checkNoLeaks(t)
	o := newTypedOrigin()
	es := newSource(t, WithBacklog(16), WithHistory(o), WithProgressInterval(time.Millisecond))
	srv := serveFiltered(t, es, nil)
	s := rawConnect(t, srv.URL+"?types=t1", "")
	waitClients(t, es, 1)
	o.publish(t, es, 1, 1)
	s.waitID("1")
	o.publish(t, es, 2, 200) // a long skipped stretch
	s.waitID("200")
	s.close()

	// Reconnected from 200, which the log holds.
	o.publish(t, es, 201, 201)
	s = rawConnect(t, srv.URL+"?types=t1", "200")
	s.waitID("201")
	if got := s.ids(); !slices.Equal(got, []string{"201"}) {
		t.Errorf("events after resuming from the log: %v, want [201]", got)
	}
	s.close()

	// Reconnected from 1, which the log no longer holds: the History
	// replays it, filtered, up to the log.
	o.publish(t, es, 202, 401)
	s = rawConnect(t, srv.URL+"?types=t1", "1")
	s.waitID("401")
	want := []string{"201", "401"}
	if got := s.ids(); !slices.Equal(got, want) {
		t.Errorf("events replayed from 1: %v, want %v", got, want)
	}
	if o.replays.Load() == 0 {
		t.Error("no replay: the test did not test the History")
	}
}

// typedOrigin is an origin whose event n has type "t1" when n%200 is 1,
// else "t0".
type typedOrigin struct{ *origin }

func newTypedOrigin() typedOrigin { return typedOrigin{newOrigin()} }

func typeOf(n int) string {
	if n%200 == 1 {
		return "t1"
	}
	return "t0"
}

func (o typedOrigin) publish(t testing.TB, es *EventSource, from, to int) {
	o.add(to)
	for i := from; i <= to; i++ {
		id := strconv.Itoa(i)
		if err := es.Publish(Event{ID: id, Type: typeOf(i), Data: "e" + id}); err != nil {
			t.Fatal(err)
		}
	}
}

func (o typedOrigin) Replay(ctx context.Context, from Start, r *Replay) error {
	lastID := from.LastEventID
	o.replays.Add(1)
	last, err := strconv.Atoi(lastID)
	if err != nil {
		return fmt.Errorf("not a position: %q", lastID)
	}
	for i := last + 1; ; i++ {
		o.mu.Lock()
		n, grew := o.n, o.grew
		o.mu.Unlock()
		if i > n {
			if err := r.Wait(ctx, grew); err != nil {
				return err
			}
			i--
			continue
		}
		id := strconv.Itoa(i)
		e, err := Encode(Event{ID: id, Type: typeOf(i), Data: "e" + id}, nil)
		if err == nil {
			err = r.SendEncoded(e)
		}
		if err != nil {
			return err
		}
	}
}

// rawStream reads a stream with the spec-literal parser, in the test's
// goroutine, so that the test sees the browser's last event ID.
type rawStream struct {
	t      testing.TB
	resp   *http.Response
	parser *ssetest.Parser
	events []ssetest.Event
	buf    []byte
}

func rawConnect(t testing.TB, url, lastID string) *rawStream {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &rawStream{t: t, resp: resp, parser: ssetest.NewParser(), buf: make([]byte, 32<<10)}
	t.Cleanup(s.close)
	return s
}

// waitID reads until the browser's last event ID is id.
func (s *rawStream) waitID(id string) {
	s.t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { s.resp.Body.Close() })
	defer timer.Stop()
	for s.parser.LastEventID != id {
		n, err := s.resp.Body.Read(s.buf)
		s.events = append(s.events, s.parser.Feed(s.buf[:n])...)
		if err != nil {
			s.t.Fatalf("last event ID %q, want %q: %v", s.parser.LastEventID, id, err)
		}
	}
}

// ids returns the IDs of the events dispatched so far.
func (s *rawStream) ids() []string {
	var ids []string
	for _, ev := range s.events {
		ids = append(ids, ev.LastEventID)
	}
	return ids
}

func (s *rawStream) close() { s.resp.Body.Close() }

// TestTeeFrom: an iteration with a filter has the events it lets
// through, and for a skipped stretch an event with only the ID of the
// last event skipped, before the next event it lets through.
func TestTeeFrom(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithProgressInterval(20*time.Millisecond))
	events, err := es.TeeFrom(t.Context(), Start{}, typeFilter{types: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		waitClients(t, es, 1)
		es.Publish(Event{ID: "1", Type: "a", Data: "one"})
		for i := 2; i <= 50; i++ {
			es.Publish(Event{ID: strconv.Itoa(i), Type: "b", Data: "skipped"})
		}
		time.Sleep(100 * time.Millisecond) // the progress interval passes
		es.Publish(Event{ID: "51", Type: "a", Data: "fifty-one"})
	})
	var got []string
	for ev := range events {
		if ev.Data != nil {
			got = append(got, ev.ID+" "+ev.Data.(string))
		} else {
			got = append(got, ev.ID+" (ID only)")
		}
		if ev.ID == "51" {
			break
		}
	}
	wg.Wait()
	if len(got) < 3 || got[0] != "1 one" || got[len(got)-2] != "50 (ID only)" || got[len(got)-1] != "51 fifty-one" {
		t.Fatalf("got %q, want 1, progress IDs ending with 50, then 51", got)
	}
	for _, g := range got[1 : len(got)-1] {
		if !strings.HasSuffix(g, "(ID only)") {
			t.Errorf("got %q: a skipped event came", g)
		}
	}
	waitClients(t, es, 0)
}

// TestFilteredClientSleepsPastTheLog: a filtered client is woken only for
// the events it is sent, so the log may evict many events it skips while
// it sleeps: it is not behind for that (no gap, no catch-up), and goes on
// with the next event of its filter.
func TestFilteredClientSleepsPastTheLog(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithBacklog(8))
	srv := serveFiltered(t, es, nil)
	rare := connect(t, srv.Client(), srv.URL+"?types=rare", "")
	waitClients(t, es, 1)
	publishTyped(t, es, 1, 100, 1) // all of type t0, skipped
	if err := es.Publish(Event{ID: "101", Type: "rare", Data: "r"}); err != nil {
		t.Fatal(err)
	}
	if ev := rare.next(); ev.Type != "rare" || ev.LastEventID != "101" {
		t.Fatalf("got %+v, want the rare event 101", ev)
	}
	if st := es.Stats(); st.Slow != 0 || len(st.Gaps) != 0 {
		t.Errorf("slow %d, gaps %v; want none", st.Slow, st.Gaps)
	}
}

// TestIndexedCollect: a client of a registered filter, which reads the
// filter's index, sends the same batches and keeps the same last ID and
// progress as a client of the same filter that visits every event, over
// random events (typed, without ID, without data, gaps, large) in a small
// log that evicts and a filter registered midway.
func TestIndexedCollect(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 1))
			es := newSource(t, WithBacklog(64))
			f := typeFilter{types: []string{"t1"}, calls: new(atomic.Int64)}
			var indexed, scanning *client
			collected := 0 // the event they last collected up to
			big := strings.Repeat("x", maxBatch/3)
			for i := range 3000 {
				ev := Event{ID: strconv.Itoa(i), Type: "t" + strconv.Itoa(rnd.IntN(4)), Data: "d"}
				switch rnd.IntN(20) {
				case 0:
					ev.ID = ""
				case 1:
					ev.Data = nil
				case 2:
					ev.Type = GapType
				case 3:
					ev.Data = big
				}
				if err := es.Publish(ev); err != nil {
					t.Fatal(err)
				}
				if i == 100 {
					es.mu.Lock()
					bit := es.addFilter(f)
					indexed = &client{es: es, filter: f, bit: bit, cursor: es.head}
					scanning = &client{es: es, filter: f, cursor: es.head}
					es.mu.Unlock()
				}
				// They collect now and then, never so late that the log
				// has moved past them.
				if indexed == nil || rnd.IntN(8) != 0 && i-collected < 32 {
					continue
				}
				collected = i
				es.mu.RLock()
				err := collectBoth(indexed, scanning)
				if size := logSize(es); err == nil && size != es.size {
					err = fmt.Errorf("log size %d, want %d: the log's events and the filters' copies", es.size, size)
				}
				es.mu.RUnlock()
				if err != nil {
					t.Fatalf("after event %d: %v", i, err)
				}
			}
		})
	}
}

// logSize adds up the wire bytes of the events in the log and of the
// copies in its filters' indexes. es.mu must be held.
func logSize(es *EventSource) int {
	n := 0
	for seq := es.head; seq < es.next; seq++ {
		n += len(es.ring[seq%uint64(len(es.ring))].wire)
	}
	for _, s := range es.filters {
		for _, x := range s.index {
			if x.copied {
				n += len(x.wire)
			}
		}
	}
	return n
}

// TestFilteredBatchBuffers: a client of a filter that passes one event in
// ten sends its batch in one buffer, as an unfiltered client does, and not
// in a buffer per event; one that passes runs of events, in two buffers
// per run: the copy of its first event, and the rest from the log.
func TestFilteredBatchBuffers(t *testing.T) {
	es := newSource(t)
	es.mu.Lock()
	sparse := &client{es: es, filter: typeFilter{types: []string{"t0"}}}
	sparse.bit = es.addFilter(sparse.filter)
	runs := &client{es: es, filter: typeFilter{types: []string{"t0", "t1", "t2", "t3", "t4"}}}
	runs.bit = es.addFilter(runs.filter)
	es.mu.Unlock()
	for i := range 1000 {
		if err := es.Publish(Event{ID: strconv.Itoa(i), Type: "t" + strconv.Itoa(i%10), Data: "d"}); err != nil {
			t.Fatal(err)
		}
	}
	es.mu.RLock()
	defer es.mu.RUnlock()
	for _, tc := range []struct {
		c    *client
		want int
	}{{sparse, 1}, {runs, 200}} {
		bufs, batches := 0, 0
		for ; tc.c.cursor < es.next; batches++ {
			tc.c.bufs = tc.c.bufs[:0]
			tc.c.collectIndexed()
			bufs += len(tc.c.bufs)
		}
		// A batch that ends within a run splits it.
		if bufs < tc.want || bufs > tc.want+batches-1 {
			t.Errorf("%v: %d buffers in %d batches, want %d", tc.c.filter, bufs, batches, tc.want)
		}
	}
}

// collectBoth has both clients collect up to the head of the log, and
// returns an error at the first difference. es.mu must be held.
func collectBoth(indexed, scanning *client) error {
	for indexed.cursor < indexed.es.next || scanning.cursor < scanning.es.next {
		indexed.bufs, scanning.bufs = indexed.bufs[:0], scanning.bufs[:0]
		indexed.collectIndexed()
		scanning.collectAll()
		if got, want := slices.Concat(indexed.bufs...), slices.Concat(scanning.bufs...); string(got) != string(want) {
			return fmt.Errorf("indexed batch %.300q, want %.300q", got, want)
		}
		if indexed.cursor != scanning.cursor || indexed.lastID != scanning.lastID || indexed.progress != scanning.progress {
			return fmt.Errorf("indexed cursor %d, last ID %q, progress %q; want %d, %q, %q",
				indexed.cursor, indexed.lastID, indexed.progress, scanning.cursor, scanning.lastID, scanning.progress)
		}
	}
	return nil
}

// BenchmarkCollectFiltered measures a filtered client's pass over a full
// log of events of k types, of which its filter passes one: reading its
// filter's index, against visiting every event as a client of a filter
// without a slot does. ns/op is per pass over the 4,096 events.
func BenchmarkCollectFiltered(b *testing.B) {
	for _, k := range []int{10, 64} {
		es, err := New(WithBacklog(4096))
		if err != nil {
			b.Fatal(err)
		}
		f := typeFilter{types: []string{"t0"}, calls: new(atomic.Int64)}
		es.mu.Lock()
		bit := es.addFilter(f)
		es.mu.Unlock()
		for i := range 4096 {
			if err := es.Publish(Event{ID: strconv.Itoa(i), Type: "t" + strconv.Itoa(i%k), Data: "d"}); err != nil {
				b.Fatal(err)
			}
		}
		for _, indexed := range []bool{true, false} {
			name := fmt.Sprintf("passes=1of%d/scan", k)
			c := &client{es: es, filter: f}
			if indexed {
				name, c.bit = fmt.Sprintf("passes=1of%d/indexed", k), bit
			}
			b.Run(name, func(b *testing.B) {
				es.mu.RLock()
				defer es.mu.RUnlock()
				for b.Loop() {
					c.cursor = es.head
					for c.cursor < es.next {
						c.bufs = c.bufs[:0]
						if indexed {
							c.collectIndexed()
						} else {
							c.collectAll()
						}
					}
				}
			})
		}
		es.Close()
	}
}
