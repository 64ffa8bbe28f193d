package brokertest

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/poll"
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

// CheckLeaks fails t if, 10 s after t and its cleanups are done (it
// polls until then), a goroutine that t started still runs. It compares
// the goroutines themselves, not their number, so that one that ends
// cannot hide one that leaked, and it shows only the leaked ones. Call it
// first in t, before t starts anything; t must not run in parallel with
// other tests of its package.
func CheckLeaks(t testing.TB) {
	before := goroutines()
	t.Cleanup(func() {
		var leaked []string
		if poll.Wait(10*time.Second, func() bool {
			leaked = leaked[:0]
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok {
					leaked = append(leaked, stack)
				}
			}
			return len(leaked) == 0
		}) {
			return
		}
		t.Errorf("%d goroutines started by the test still run 10s after it:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	})
}

// goroutines returns the stacks of the goroutines that run, by their
// header line's ID ("goroutine 42").
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	gs := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, _ := strings.Cut(g, " [")
		gs[id] = g
	}
	return gs
}
