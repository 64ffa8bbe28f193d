package backoff

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestNextDoublesUpToMaxWithJitter(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 800 * time.Millisecond}
	for i, base := range []time.Duration{100, 200, 400, 800, 800, 800} {
		base *= time.Millisecond
		if d := b.Next(); d < base/2 || d >= base*3/2 {
			t.Errorf("wait %d = %v, want in [%v, %v)", i, d, base/2, base*3/2)
		}
	}
	b.Reset()
	if d := b.Next(); d >= 150*time.Millisecond {
		t.Errorf("after Reset: wait %v, want below 150ms", d)
	}
}

func TestZeroBackoff(t *testing.T) {
	var b Backoff
	if d := b.Next(); d < 50*time.Millisecond || d >= 150*time.Millisecond {
		t.Errorf("first wait %v, want about 100ms", d)
	}
	for range 20 {
		b.Next()
	}
	if d := b.Next(); d < 2500*time.Millisecond || d >= 7500*time.Millisecond {
		t.Errorf("wait after 20 retries %v, want about 5s", d)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := Backoff{Min: time.Second, Max: time.Second}
		if !b.Wait(context.Background()) {
			t.Error("Wait with a live context reported false")
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(100 * time.Millisecond)
			cancel()
		}()
		start := time.Now()
		if b.Wait(ctx) {
			t.Error("Wait cut short by its context reported true")
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("Wait returned after %v, want 100ms (when ctx ended)", d)
		}
	})
}
