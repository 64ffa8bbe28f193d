package esource

import (
	"bytes"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/poll"
)

// waitStats polls es.Stats until ok accepts them, and fails the test with
// the last ones if that takes too long.
func waitStats(t *testing.T, es *EventSource, what string, ok func(Stats) bool) Stats {
	t.Helper()
	var st Stats
	if !poll.Wait(10*time.Second, func() bool { st = es.Stats(); return ok(st) }) {
		t.Fatalf("stats %+v after 10s, want %s", st, what)
	}
	return st
}

// countingBody reads an event stream's body and keeps what it read.
type countingBody struct {
	mu   sync.Mutex
	body bytes.Buffer
}

func (b *countingBody) read(t *testing.T, url string) (stop func()) {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.mu.Lock()
			b.body.Write(buf[:n])
			b.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return func() { resp.Body.Close(); <-done }
}

func (b *countingBody) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.body.String()
}

// Stats count the clients, the events published, and the bytes of event
// stream the clients received, those of clients that left included.
func TestStatsClientsEventsBytes(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t)
	srv := serve(t, es)
	if st := es.Stats(); st.Clients != 0 || st.Published != 0 || st.BytesSent != 0 || len(st.Gaps) != 0 {
		t.Fatalf("stats of a new EventSource %+v, want zeros", st)
	}
	var a, b countingBody
	stopA := a.read(t, srv.URL)
	stopB := b.read(t, srv.URL)
	waitClients(t, es, 2)
	publishN(t, es, 1, 50)
	received := func(bodies ...*countingBody) uint64 {
		n := 0
		for _, b := range bodies {
			n += len(b.String())
		}
		return uint64(n)
	}
	for _, b := range []*countingBody{&a, &b} {
		poll.Until(t, 10*time.Second, "each client received e50", func() bool {
			return bytes.Contains([]byte(b.String()), []byte("data: e50\n\n"))
		})
	}
	st := waitStats(t, es, "the bytes both clients received", func(st Stats) bool {
		return st.BytesSent == received(&a, &b)
	})
	if st.Clients != 2 || st.Published != 50 {
		t.Errorf("stats %+v, want 2 clients and 50 events published", st)
	}

	// A client that goes away is noticed at a write: publish until it is.
	stopA()
	i := 51
	poll.Until(t, 10*time.Second, "the client that left is noticed at a write", func() bool {
		if es.Clients() == 1 {
			return true
		}
		publishN(t, es, i, i)
		i++
		return false
	})
	// Its bytes stay counted: the counter never goes down.
	if after := es.Stats(); after.BytesSent < st.BytesSent || after.BytesSent < received(&a, &b) {
		t.Errorf("after a client left, %d bytes sent, want at least the %d both received", after.BytesSent, received(&a, &b))
	}
	stopB()
}

// Gap events are counted by reason: one published to the log once however
// many clients receive it, one sent to a single client once. A message
// that only calls itself a gap is no gap.
func TestStatsGaps(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithBacklog(4))
	publishN(t, es, 1, 10) // before the clients: none can fall behind
	for range 3 {
		events, err := es.Tee(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range events {
			}
		}()
	}
	waitClients(t, es, 3)
	if err := es.Publish(Gap{Reason: "messages-lost"}.Event("11")); err != nil {
		t.Fatal(err)
	}
	if err := es.Publish(Event{ID: "12", Type: GapType, Data: "not a gap"}); err != nil {
		t.Fatal(err)
	}
	// A client resumes from an ID the log no longer holds, without a
	// History: it is sent an unknown-id gap.
	events, err := es.Tee(t.Context(), "3")
	if err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		if ev.Type != GapType {
			t.Fatalf("got %+v, want a gap", ev)
		}
		break
	}
	want := map[string]uint64{"messages-lost": 1, "unknown-id": 1}
	if st := es.Stats(); !maps.Equal(st.Gaps, want) || st.Replays != 0 {
		t.Errorf("gaps %v, replays %d; want %v and no replay", st.Gaps, st.Replays, want)
	}
}

// A client that resumes from an ID the log no longer holds is handed to
// the History: a replay; one the History refuses is sent the GapError's
// reason, counted.
func TestStatsReplaysAndHistoryGaps(t *testing.T) {
	checkNoLeaks(t)
	o := newOrigin()
	es := newSource(t, WithBacklog(4), WithHistory(o))
	o.publish(t, es, 1, 10)
	events, err := es.Tee(t.Context(), "2")
	if err != nil {
		t.Fatal(err)
	}
	next := 3
	for ev := range events {
		if want := strconv.Itoa(next); ev.ID != want {
			t.Fatalf("got %+v, want event %s", ev, want)
		}
		if next == 10 {
			break
		}
		next++
	}
	if st := es.Stats(); st.Replays != 1 || st.Slow != 0 || len(st.Gaps) != 0 {
		t.Errorf("stats %+v, want 1 replay, no slow client and no gap", st)
	}

	es2 := newSource(t, WithHistory(refusing{}))
	publishN(t, es2, 1, 3)
	events, err = es2.Tee(t.Context(), "garbage")
	if err != nil {
		t.Fatal(err)
	}
	for range events {
		break
	}
	if st := es2.Stats(); st.Replays != 1 || !maps.Equal(st.Gaps, map[string]uint64{"malformed-id": 1}) {
		t.Errorf("stats %+v, want 1 replay and 1 malformed-id gap", st)
	}
}

// A client that falls behind the log is counted as slow, whether the
// History catches it up or it is sent a gap.
func TestStatsSlowClients(t *testing.T) {
	checkNoLeaks(t)
	for _, history := range []bool{false, true} {
		t.Run("history="+strconv.FormatBool(history), func(t *testing.T) {
			o := newOrigin()
			opts := []Option{WithBacklog(4)}
			if history {
				opts = append(opts, WithHistory(o))
			}
			es := newSource(t, opts...)
			events, err := es.Tee(t.Context(), "")
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				waitClients(t, es, 1)
				o.publish(t, es, 1, 1)
			}()
			for ev := range events {
				if ev.ID == "1" {
					o.publish(t, es, 2, 12) // the client falls behind the log
				}
				if ev.ID == "12" {
					break
				}
			}
			st := es.Stats()
			wantGaps, wantReplays := map[string]uint64{"slow": 1}, uint64(0)
			if history {
				wantGaps, wantReplays = map[string]uint64{}, 1
			}
			if st.Slow != 1 || st.Replays != wantReplays || !maps.Equal(st.Gaps, wantGaps) {
				t.Errorf("stats %+v, want 1 slow client, %d replays, gaps %v", st, wantReplays, wantGaps)
			}
		})
	}
}

// However many reasons gaps have, Stats tells at most MaxGapReasons apart.
func TestStatsGapReasonsBounded(t *testing.T) {
	es := newSource(t)
	for i := range 2 * MaxGapReasons {
		if err := es.Publish(Gap{Reason: "reason-" + strconv.Itoa(i)}.Event("")); err != nil {
			t.Fatal(err)
		}
	}
	st := es.Stats()
	if len(st.Gaps) != MaxGapReasons {
		t.Errorf("%d reasons, want %d", len(st.Gaps), MaxGapReasons)
	}
	var total uint64
	for _, n := range st.Gaps {
		total += n
	}
	if total != 2*MaxGapReasons || st.Gaps["other"] != MaxGapReasons+1 {
		t.Errorf("gaps %v: %d in all, want %d, %d of them other", st.Gaps, total, 2*MaxGapReasons, MaxGapReasons+1)
	}
}
