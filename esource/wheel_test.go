package esource

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestWheel: a channel of the wheel is closed at the first tick at or
// after its deadline, never before, except that a deadline beyond the
// wheel's horizon wakes its client at the horizon, to wait again.
func TestWheel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const step = 100 * time.Millisecond
		w := newWheel(step)
		start := time.Now()
		for _, tc := range []struct {
			after, want time.Duration
		}{
			{0, step},
			{step, step},
			{step + 1, 2 * step},
			{15 * time.Second, 15 * time.Second},
			{time.Hour, wheelSlots * step},
		} {
			synctest.Wait()
			now := time.Since(start).Round(step)
			ch := w.at(time.Now().Add(tc.after))
			<-ch
			if got := time.Since(start) - now; got != tc.want {
				t.Errorf("a deadline %v ahead: closed after %v, want %v", tc.after, got, tc.want)
			}
		}
	})
}
