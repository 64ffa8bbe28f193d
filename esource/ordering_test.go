package esource

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// partitioned stands for a source of two partitions whose events a reader
// merges as they come, so that the live log and a replay interleave them
// differently. An event's ID is its partition and the position after it,
// "P:A.B": partition P, next offsets A and B.
type partitioned struct {
	mu   sync.Mutex
	logs [2][]string // the data of each partition's events
	live []string    // IDs in the order the live log got them
}

func (s *partitioned) add(p int, data string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs[p] = append(s.logs[p], data)
}

// position parses "P:A.B".
func position(id string) (p int, pos [2]int, ok bool) {
	ps, rest, ok1 := strings.Cut(id, ":")
	a, b, ok2 := strings.Cut(rest, ".")
	var err [3]error
	p, err[0] = strconv.Atoi(ps)
	pos[0], err[1] = strconv.Atoi(a)
	pos[1], err[2] = strconv.Atoi(b)
	return p, pos, ok1 && ok2 && err[0] == nil && err[1] == nil && err[2] == nil
}

// at is a decoded ID.
type at struct {
	p   int
	pos [2]int
}

func (s *partitioned) Decode(id string) (Position, bool) {
	p, pos, ok := position(id)
	if !ok {
		return nil, false
	}
	return &at{p, pos}, true
}

func (s *partitioned) Covers(last, p Position) bool {
	v, l := last.(*at).pos, p.(*at).pos
	return v[0] >= l[0] && v[1] >= l[1]
}

func (s *partitioned) Received(last, p Position) bool {
	e := p.(*at)
	return last.(*at).pos[e.p] >= e.pos[e.p]
}

func (s *partitioned) Merge(last, p Position, id []byte) (Position, []byte) {
	v, e := last.(*at).pos, p.(*at)
	m := &at{e.p, [2]int{max(v[0], e.pos[0]), max(v[1], e.pos[1])}}
	return m, fmt.Appendf(id, "%d:%d.%d", m.p, m.pos[0], m.pos[1])
}

var _ Ordering = (*partitioned)(nil)

// Replay reads from the start of the stream, as a reader shared with
// clients further behind would, partition 1 before partition 0: never the
// live order. It sends every event with the reader's own ID and position,
// and the Replay's hand-off rule skips what the client has and gives the
// others the client's own IDs.
func (s *partitioned) Replay(ctx context.Context, from Start, r *Replay) error {
	if _, ok := from.Position.(*at); !ok {
		return fmt.Errorf("not a position: %q", from.LastEventID)
	}
	s.mu.Lock()
	logs := [2][]string{s.logs[0], s.logs[1]}
	s.mu.Unlock()
	var pos [2]int
	for _, p := range []int{1, 0} {
		for pos[p] < len(logs[p]) {
			data := logs[p][pos[p]]
			pos[p]++
			e, err := Encode(Event{ID: fmt.Sprintf("%d:%d.%d", p, pos[0], pos[1]), Data: data}, &at{p, pos})
			if err != nil {
				return err
			}
			if err := r.SendEncoded(e); err != nil {
				return err
			}
		}
	}
	if err := r.Flush(); err != nil { // before waiting, as a History must
		return err
	}
	<-ctx.Done() // follow live: here, wait for the log to take over
	return ctx.Err()
}

// TestOrderingJoinsWithoutACommonID resumes clients of a two-partition
// stream from positions the log never held, and checks that each gets
// every event it had not received, once, in each partition's order.
func TestOrderingJoinsWithoutACommonID(t *testing.T) {
	checkNoLeaks(t)
	src := &partitioned{}
	es := newSource(t, WithBacklog(16), WithHistory(src))
	var pos [2]int
	publish := func(n int) {
		for range n {
			p := rand.IntN(2)
			data := fmt.Sprintf("p%d-%d", p, pos[p])
			src.add(p, data)
			pos[p]++
			id := fmt.Sprintf("%d:%d.%d", p, pos[0], pos[1])
			src.live = append(src.live, id)
			if err := es.Publish(Event{ID: id, Data: data}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(100)

	for _, from := range [][2]int{{0, 0}, {10, 40}, {pos[0] - 3, pos[1]}, {pos[0], pos[1] - 5}, pos} {
		t.Run(fmt.Sprint(from), func(t *testing.T) {
			// The partition of a position's ID does not matter to Covers.
			events, err := es.Tee(t.Context(), fmt.Sprintf("0:%d.%d", from[0], from[1]))
			if err != nil {
				t.Fatal(err)
			}
			next := from
			want := pos[0] + pos[1] + 10 - from[0] - from[1]
			got := 0
			if want == 10 {
				publish(10)
			}
			for ev := range events {
				p, _, ok := position(ev.ID)
				if !ok {
					t.Fatalf("event %+v", ev)
				}
				if w := fmt.Sprintf("p%d-%d", p, next[p]); ev.Data != w {
					t.Fatalf("got %q, want %q (partition %d)", ev.Data, w, p)
				}
				next[p]++
				// The ID is where the client stands, to resume from.
				if _, at, _ := position(ev.ID); at != next {
					t.Fatalf("event %q has ID %q, but the client is at %v", ev.Data, ev.ID, next)
				}
				got++
				if got == want-10 {
					publish(10) // live events after the join
				}
				if got == want {
					break
				}
			}
		})
	}
}
