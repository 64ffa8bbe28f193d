package esource

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// origin stands for the place events come from, with all their history: a
// stream whose event n has ID n and data "e<n>", as publishN makes them.
// It implements History by replaying from itself, following new events
// live as a broker reader does.
type origin struct {
	mu      sync.Mutex
	n       int           // events 1..n exist
	grew    chan struct{} // closed and replaced when n grows
	replays atomic.Int32
}

func newOrigin() *origin { return &origin{grew: make(chan struct{})} }

// add makes events up to n exist at the origin.
func (o *origin) add(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n = n
	close(o.grew)
	o.grew = make(chan struct{})
}

// publish adds events from..to at the origin, then publishes them to es,
// as a bridge does: the live feed lags the origin.
func (o *origin) publish(t testing.TB, es *EventSource, from, to int) {
	o.add(to)
	publishN(t, es, from, to)
}

func (o *origin) Replay(ctx context.Context, from Start, r *Replay) error {
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
			if err := r.Flush(); err != nil {
				return err
			}
			select {
			case <-grew:
			case <-ctx.Done():
				return ctx.Err()
			}
			i--
			continue
		}
		id := strconv.Itoa(i)
		if err := r.Send(Event{ID: id, Data: "e" + id}); err != nil {
			return err
		}
	}
}

func TestHistoryReplaysUpToTheLog(t *testing.T) {
	checkNoLeaks(t)
	o := newOrigin()
	es := newSource(t, WithBacklog(8), WithHistory(o))
	srv := serve(t, es)
	o.publish(t, es, 1, 100) // the log holds 93..100

	s := connect(t, srv.Client(), srv.URL, "10")
	s.expect(11, 100)
	o.publish(t, es, 101, 105) // fewer than the log holds: no replay
	s.expect(101, 105)
	if o.replays.Load() != 1 {
		t.Errorf("%d replays, want 1", o.replays.Load())
	}
}

func TestHistoryAheadOfTheLog(t *testing.T) {
	checkNoLeaks(t)
	o := newOrigin()
	es := newSource(t, WithBacklog(8), WithHistory(o))
	srv := serve(t, es)
	o.publish(t, es, 1, 40)
	o.add(50) // the origin has 41..50, the live feed does not yet

	// The client comes from a server whose feed was ahead of this one.
	s := connect(t, srv.Client(), srv.URL, "45")
	s.expect(46, 50)
	publishN(t, es, 41, 50) // the live feed catches up: the client joins it
	o.publish(t, es, 51, 60)
	s.expect(51, 60)
}

func TestSlowClientCaughtUpByHistory(t *testing.T) {
	checkNoLeaks(t)
	o := newOrigin()
	es := newSource(t, WithBacklog(4), WithHistory(o))
	events, err := es.Tee(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		waitClients(t, es, 1)
		o.publish(t, es, 1, 1)
	}()
	next := 1
	for ev := range events {
		if want := strconv.Itoa(next); ev.ID != want || ev.Type != "" {
			t.Fatalf("got %+v, want event %s", ev, want)
		}
		if next == 1 {
			o.publish(t, es, 2, 12) // the client falls behind the log
		}
		if next == 12 {
			break
		}
		next++
	}
	if o.replays.Load() != 1 {
		t.Errorf("%d replays, want 1", o.replays.Load())
	}
}

func TestHistoryErrorIsGap(t *testing.T) {
	checkNoLeaks(t)
	o := newOrigin()
	es := newSource(t, WithHistory(o))
	srv := serve(t, es)
	o.publish(t, es, 1, 3)
	s := connect(t, srv.Client(), srv.URL, "not-a-number")
	ev := s.next()
	var gap Gap
	if err := json.Unmarshal([]byte(ev.Data), &gap); err != nil || ev.Type != GapType {
		t.Fatalf("got %+v, want a gap (%v)", ev, err)
	}
	// A stable code, not the hook's error text, which goes to the log.
	if gap.Reason != "history" || gap.Message == "" || gap.LastEventID != "not-a-number" || ev.LastEventID != "3" {
		t.Errorf("gap %+v, ID %q; want reason \"history\" with a message, ID 3", gap, ev.LastEventID)
	}
	o.publish(t, es, 4, 5)
	s.expect(4, 5)
}

// refusing is a History that refuses every client with a GapError.
type refusing struct{}

func (refusing) Replay(context.Context, Start, *Replay) error {
	return &GapError{Reason: "malformed-id", Message: "the event ID cannot be read"}
}

// TestGapErrorAndLongID resumes from an ID of 1 MB that the History
// refuses: the gap carries the hook's code and message, and no more than
// MaxEchoedID bytes of the ID.
func TestGapErrorAndLongID(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithHistory(refusing{}))
	publishN(t, es, 1, 3)
	long := strings.Repeat("é", 1<<19) // 1 MB, two bytes a rune
	events, err := es.Tee(t.Context(), long)
	if err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		var gap Gap
		if err := json.Unmarshal([]byte(ev.Data.(string)), &gap); err != nil || ev.Type != GapType {
			t.Fatalf("got %+v, want a gap (%v)", ev, err)
		}
		if gap.Reason != "malformed-id" || gap.Message != "the event ID cannot be read" {
			t.Errorf("gap %+v, want the GapError's reason and message", gap)
		}
		if len(gap.LastEventID) > MaxEchoedID+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(gap.LastEventID, "…")) || !utf8.ValidString(gap.LastEventID) {
			t.Errorf("gap's lastEventId is %d bytes (%q…), want a valid prefix of at most %d", len(gap.LastEventID), gap.LastEventID[:min(20, len(gap.LastEventID))], MaxEchoedID)
		}
		break
	}
}

// TestResumeExactlyOnceUnderLoad resumes many clients at random positions
// while events are published, with a log small enough that clients keep
// falling behind it, and checks that each receives every event after its
// position exactly once, in order.
func TestResumeExactlyOnceUnderLoad(t *testing.T) {
	checkNoLeaks(t)
	const total, clients = 5000, 40
	o := newOrigin()
	es := newSource(t, WithBacklog(32), WithHistory(o))

	var wg sync.WaitGroup
	published := make(chan int, total)
	wg.Go(func() {
		for i := 1; i <= total; i++ {
			o.publish(t, es, i, i)
			published <- i
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	for c := range clients {
		wg.Go(func() {
			start := <-published // resume from a position in the past
			from := max(0, start-rand.IntN(200))
			events, err := es.Tee(t.Context(), strconv.Itoa(from))
			if err != nil {
				t.Error(err)
				return
			}
			next := from + 1
			for ev := range events {
				if want := strconv.Itoa(next); ev.ID != want {
					t.Errorf("client %d from %d: got %q (%s), want %s", c, from, ev.ID, ev.Type, want)
					return
				}
				if c%4 == 0 && next%50 == 0 {
					time.Sleep(2 * time.Millisecond) // a slow client
				}
				if next == total {
					return
				}
				next++
			}
		})
	}
	wg.Wait()
	// The test means something only if clients went through the hook.
	if r := o.replays.Load(); r < clients/2 {
		t.Errorf("%d replays for %d clients: the log served nearly all", r, clients)
	}
	t.Logf("%d replays for %d clients", o.replays.Load(), clients)
}

// TestReplayEndsWhenTheClientGoes checks that a History hook waiting on
// its source is cancelled when the client hangs up, on a connection that
// esource took over from net/http as on one it did not.
func TestReplayEndsWhenTheClientGoes(t *testing.T) {
	checkNoLeaks(t)
	o := newOrigin()
	es := newSource(t, WithBacklog(8), WithHistory(o))
	srv := serve(t, es)
	o.publish(t, es, 1, 40)
	o.add(50) // the live feed lags: the replay of 46..50 then waits
	s := connect(t, srv.Client(), srv.URL, "45")
	s.expect(46, 50)
	s.resp.Body.Close()
	waitClients(t, es, 0)
}
