package bridge_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/fakesource"
)

// A handOff is one run of the catch-up hand-off, on an in-memory stream
// whose readers each interleave its partitions in an order of their own:
// messages are published, then clients resume from positions of the live
// log's (the route's log keeps few of them), while more are published.
type handOff struct {
	partitions     int
	before, during int // messages published before and while clients resume
	backlog        int // events the route's log keeps
	ring           int // events a catch-up reader holds
	readers        int // catch-up readers the route may have
	clients        int
	slow           int // how many of the clients read slowly
	seed           uint64
}

// A point is a position of the live log: an event ID, and for each
// partition the offset of the next message.
type point struct {
	id   string
	next []uint64
}

// runInMemory runs b, whose routes are on in-memory streams, until the
// test ends, or for 20 s at most, then shuts it down; it returns once b
// is ready, with the context b runs under and its cancel.
func runInMemory(t testing.TB, b *bridge.Bridge) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		b.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-ran
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		b.Shutdown(sctx)
	})
	waitBridgeReady(t, b, true)
	return ctx, cancel
}

// run runs h and fails t if a client receives a message twice or out of
// its partition's order, misses one, or gets a gap; or if the route had
// more catch-up readers than it may.
func (h handOff) run(t testing.TB) {
	rnd := rand.New(rand.NewPCG(h.seed, 1))
	stream := fakesource.New("t", h.partitions, h.seed)
	b, err := bridge.New(bridge.Config{Backlog: h.backlog}, bridge.Route{
		Path: "/s", Source: stream,
		Options: bridge.Options{Earliest: true, CatchUpReaders: h.readers},
	})
	if err != nil {
		t.Fatal(err)
	}
	bridge.SetCatchUp(b, "/s", h.ring, 5*time.Millisecond)
	ctx, cancel := runInMemory(t, b)

	// The watcher records the live log's positions.
	watch, err := bridge.Tee(ctx, b, "/s", "")
	if err != nil {
		t.Fatal(err)
	}
	points := make(chan point, h.before+h.during)
	go func() {
		defer close(points)
		next := make([]uint64, h.partitions)
		for ev := range watch {
			if ev.Data == nil {
				continue // the live reader's start
			}
			var p int
			var off uint64
			fmt.Sscanf(ev.Data.(string), "p%d-%d", &p, &off)
			if ev.Type == esource.GapType || off != next[p] {
				t.Errorf("watcher: got %v, want p%d-%d", ev, p, next[p])
				cancel()
				return
			}
			next[p]++
			points <- point{id: ev.ID, next: append([]uint64(nil), next...)}
			if len(points) == cap(points) {
				return
			}
		}
	}()
	waitClient(t, b, "/s") // the watcher
	// Which partition each message goes to, and so how many each will have.
	parts := make([]int, h.before+h.during)
	final := make([]uint64, h.partitions)
	for i := range parts {
		parts[i] = rnd.IntN(h.partitions)
		final[parts[i]]++
	}
	publish := func(parts []int) {
		for _, p := range parts {
			stream.Append(p, fmt.Appendf(nil, "p%d-%d", p, stream.Lengths()[p]))
		}
	}
	publish(parts[:h.before])
	var resumeFrom []point
	for range h.before {
		p, ok := <-points
		if !ok {
			t.Fatal("the watcher stopped")
		}
		resumeFrom = append(resumeFrom, p)
	}

	var wg sync.WaitGroup
	for i := range h.clients {
		from := point{id: bridge.Origin(b, "/s"), next: make([]uint64, h.partitions)} // the start
		if k := rnd.IntN(len(resumeFrom) + 1); k < len(resumeFrom) {
			from = resumeFrom[k]
		}
		slow := i < h.slow
		reconnectAfter := 1 + rnd.IntN(h.before+h.during)
		wg.Go(func() {
			if err := h.client(ctx, b, from, slow, reconnectAfter, final); err != nil {
				t.Errorf("client %d from %v (slow %v): %v", i, from.next, slow, err)
				cancel()
			}
		})
	}
	publish(parts[h.before:])
	wg.Wait()
	if _, most, _ := stream.Readers(); most > 1+h.readers {
		t.Errorf("%d readers open at once, want at most 1 live and %d catch-up", most, h.readers)
	}
}

// client reads from the route after from, checking each message, until
// it has every message of the final lengths; it resumes once on the way,
// after reconnectAfter messages, from the last ID it received.
func (h handOff) client(ctx context.Context, b *bridge.Bridge, from point, slow bool, reconnectAfter int, final []uint64) error {
	next := append([]uint64(nil), from.next...)
	lastID := from.id
	done := func() bool {
		for p := range final {
			if next[p] < final[p] {
				return false
			}
		}
		return true
	}
	received := 0
	for !done() {
		events, err := bridge.Tee(ctx, b, "/s", lastID)
		if err != nil {
			return err
		}
		for ev := range events {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if ev.Type == esource.GapType {
				return fmt.Errorf("gap %v", ev.Data)
			}
			if ev.ID != "" {
				lastID = ev.ID
			}
			if ev.Data == nil {
				continue
			}
			var p int
			var off uint64
			fmt.Sscanf(ev.Data.(string), "p%d-%d", &p, &off)
			if off != next[p] {
				return fmt.Errorf("partition %d: offset %d, want %d", p, off, next[p])
			}
			next[p]++
			received++
			if slow {
				time.Sleep(50 * time.Microsecond)
			}
			if received == reconnectAfter || done() {
				break
			}
		}
	}
	return nil
}

func TestCatchUpHandOff(t *testing.T) {
	for _, h := range []handOff{
		{partitions: 1, before: 500, during: 200, backlog: 16, ring: 32, readers: 2, clients: 50, slow: 5, seed: 1},
		{partitions: 3, before: 500, during: 200, backlog: 16, ring: 32, readers: 2, clients: 50, slow: 5, seed: 2},
		{partitions: 6, before: 300, during: 300, backlog: 8, ring: 8, readers: 1, clients: 30, slow: 10, seed: 3},
	} {
		t.Run(fmt.Sprintf("%d partitions", h.partitions), func(t *testing.T) { h.run(t) })
	}
}

// FuzzCatchUpHandOff runs the hand-off with any partitions, interleavings,
// resume points, ring sizes and slow riders.
func FuzzCatchUpHandOff(f *testing.F) {
	f.Add(uint8(2), uint16(100), uint16(50), uint8(4), uint8(4), uint8(1), uint8(10), uint8(2), uint64(7))
	f.Add(uint8(4), uint16(300), uint16(0), uint8(1), uint8(2), uint8(2), uint8(20), uint8(20), uint64(8))
	f.Fuzz(func(t *testing.T, partitions uint8, before, during uint16, backlog, ring, readers, clients, slow uint8, seed uint64) {
		h := handOff{
			partitions: 1 + int(partitions%6),
			before:     1 + int(before%400),
			during:     int(during % 400),
			backlog:    1 + int(backlog%32),
			ring:       1 + int(ring%32),
			readers:    1 + int(readers%4),
			clients:    1 + int(clients%20),
			seed:       seed,
		}
		h.slow = int(slow) % (h.clients + 1)
		h.run(t)
	})
}
