package sharedcheck

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Three watchers share one check an interval, and see each outcome; the
// checks stop with the last watcher, and start afresh with the next. On
// synctest's clock: "no check in 20 ms" is exact, not a guess under load.
func TestShared(t *testing.T) {
	synctest.Test(t, testShared)
}

func testShared(t *testing.T) {
	var c Check[int]
	c.Interval = 5 * time.Millisecond
	var calls atomic.Int64
	check := func(_ context.Context, prev int) int {
		calls.Add(1)
		return prev + 1
	}
	var wg sync.WaitGroup
	var most atomic.Int64 // the latest outcome a watcher saw
	for range 3 {
		unwatch := c.Watch(check)
		wg.Go(func() {
			defer unwatch()
			last := 0
			for range 5 {
				n, ok := c.Next(t.Context())
				if !ok || n <= last {
					t.Errorf("outcome %d after %d (%v), want a later one", n, last, ok)
					return
				}
				last = n
				for m := most.Load(); int64(n) > m && !most.CompareAndSwap(m, int64(n)); m = most.Load() {
				}
			}
		})
	}
	wg.Wait()
	// One check an outcome, whatever the watchers (the last may have been
	// cut short by the end of the watch).
	if n, m := calls.Load(), most.Load(); n > m+1 {
		t.Errorf("%d checks for outcomes up to %d, want one each, shared by the watchers", n, m)
	}
	synctest.Wait() // the checks have stopped, or are blocked on the clock
	stopped := calls.Load()
	time.Sleep(20 * time.Millisecond)
	synctest.Wait()
	if calls.Load() != stopped {
		t.Error("checks go on with no watcher")
	}
	defer c.Watch(check)()
	if n, ok := c.Next(t.Context()); !ok || n != 1 {
		t.Errorf("first outcome of a new watch: %d, %v; want 1 (from the zero value)", n, ok)
	}
}

// Next returns false when its ctx ends first.
func TestNextCancelled(t *testing.T) {
	var c Check[int]
	c.Interval = time.Hour
	defer c.Watch(func(context.Context, int) int { return 1 })()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, ok := c.Next(ctx); ok {
		t.Error("Next returned an outcome after its ctx ended")
	}
}

// Soon hastens a check, no sooner than Soonest after the last one, and
// requests made meanwhile share one check.
func TestSoon(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Check[int]
		c.Interval = time.Hour
		c.Soonest = 100 * time.Millisecond
		var calls atomic.Int64
		defer c.Watch(func(context.Context, int) int { return int(calls.Add(1)) })()
		c.Soon()
		synctest.Wait()
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d checks at once after Soon, want 1", n)
		}
		c.Soon()
		c.Soon()
		c.Soon()
		time.Sleep(99 * time.Millisecond)
		synctest.Wait()
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d checks within Soonest, want 1", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		time.Sleep(time.Second)
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d checks after three Soon within Soonest, want 2", n)
		}
	})
}
