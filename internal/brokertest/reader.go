package brokertest

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
)

// Timeout bounds each wait of Open and Next.
const Timeout = 20 * time.Second

// Open opens a reader on src from start, failing t on error, and closes it
// at cleanup.
func Open(t testing.TB, src bridge.Source, start bridge.Start) bridge.Reader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	r, err := src.Open(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Next returns r's next message, failing t on error.
func Next(t testing.TB, r bridge.Reader) bridge.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	m, err := r.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ExpectNothing checks that r has no message for a little while.
func ExpectNothing(t testing.TB, r bridge.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if m, err := r.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next = %+v, %v; want nothing", m, err)
	}
}

// CheckLeaks fails t if, once t and its cleanups are done, more goroutines
// run than before it.
func CheckLeaks(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		n := 0
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n = runtime.NumGoroutine(); n <= before {
				return
			}
		}
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	})
}
