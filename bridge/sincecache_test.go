package bridge

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// slowSeeker answers PositionAt with the number of look-ups so far, after
// a delay (on the bubble's clock).
type slowSeeker struct {
	delay time.Duration
	calls atomic.Int64
}

func (s *slowSeeker) PositionAt(ctx context.Context, t time.Time) (Position, error) {
	n := s.calls.Add(1)
	select {
	case <-time.After(s.delay):
		return Position{uint64(n)}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// The since cache, on synctest's clock: clients that come while a look-up
// is under way share it; its answer serves the same since for sinceTTL,
// and not a moment longer; another since is looked up on its own.
func TestSinceCacheTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSinceCache()
		src := &slowSeeker{delay: 100 * time.Millisecond}
		at := time.Now().Add(-time.Hour)
		lookup := func(when time.Time) uint64 {
			t.Helper()
			pos, err := c.lookup(t.Context(), t.Context(), src, when)
			if err != nil || len(pos) != 1 {
				t.Fatalf("lookup: %v, %v", pos, err)
			}
			return pos[0]
		}

		// Five clients at once: one look-up.
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() {
				if got := lookup(at); got != 1 {
					t.Errorf("a client of the first look-up got %d, want 1", got)
				}
			})
		}
		wg.Wait()
		if n := src.calls.Load(); n != 1 {
			t.Fatalf("%d look-ups for 5 clients at once, want 1", n)
		}

		// The answer serves until sinceTTL after it came.
		time.Sleep(sinceTTL - time.Nanosecond)
		if got := lookup(at); got != 1 {
			t.Errorf("just before sinceTTL: answer %d, want the cached 1", got)
		}
		time.Sleep(time.Nanosecond)
		if got := lookup(at); got != 2 {
			t.Errorf("at sinceTTL: answer %d, want a new look-up (2)", got)
		}
		if got := lookup(at.Add(time.Second)); got != 3 {
			t.Errorf("another since: answer %d, want a look-up of its own (3)", got)
		}
	})
}

// A client that goes away before its look-up is made leaves no answer:
// the next client looks the since up.
func TestSinceCacheGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSinceCache()
		src := &slowSeeker{delay: time.Second}
		at := time.Now().Add(-time.Hour)
		// Take every look-up slot, so that the next client waits for one.
		for range sinceLookups {
			c.lookups <- struct{}{}
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() {
			_, err := c.lookup(ctx, t.Context(), src, at)
			done <- err
		}()
		synctest.Wait() // it waits for a slot
		cancel()
		if err := <-done; err != context.Canceled {
			t.Fatalf("lookup of a client gone: %v, want context.Canceled", err)
		}
		for range sinceLookups {
			<-c.lookups
		}
		if pos, err := c.lookup(t.Context(), t.Context(), src, at); err != nil || len(pos) != 1 || pos[0] != 1 {
			t.Errorf("the next client: %v, %v; want a look-up of its own", pos, err)
		}
	})
}
