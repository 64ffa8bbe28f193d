package poll

import (
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		ok := Wait(time.Second, func() bool {
			at = append(at, time.Since(start))
			return len(at) == 6
		})
		if !ok {
			t.Fatal("Wait = false, want true")
		}
		want := []time.Duration{0, 10, 30, 70, 150, 250}
		for i := range want {
			want[i] *= time.Millisecond
		}
		if len(at) != len(want) {
			t.Fatalf("tries at %v, want %v", at, want)
		}
		for i := range at {
			if at[i] != want[i] {
				t.Fatalf("tries at %v, want %v", at, want)
			}
		}
	})
}

func TestWaitTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var tries int
		var lastTry time.Duration
		if Wait(time.Second, func() bool { tries++; lastTry = time.Since(start); return false }) {
			t.Fatal("Wait = true, want false")
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("Wait returned after %v, want 1s", d)
		}
		if lastTry != time.Second {
			t.Errorf("last try at %v, want at the timeout", lastTry)
		}
		if tries > 20 {
			t.Errorf("%d tries in 1s, want fewer (a pause of up to 100ms)", tries)
		}
	})
}

// recorder is a testing.TB that records a failure instead of stopping.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
}

func TestUntilNil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		UntilNil(t, time.Second, "the third try", func() error {
			if n++; n < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		r := &recorder{TB: t}
		UntilNil(r, time.Second, "never", func() error { return errors.New("no luck") })
		if want := "timed out after 1s waiting until never: no luck"; r.msg != want {
			t.Errorf("failure %q, want %q", r.msg, want)
		}
		r = &recorder{TB: t}
		Until(r, 50*time.Millisecond, "the cows come home", func() bool { return false })
		if want := "timed out after 50ms waiting until the cows come home"; r.msg != want {
			t.Errorf("failure %q, want %q", r.msg, want)
		}
	})
}
