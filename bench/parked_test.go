package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
)

// BenchmarkParkedGoroutine measures what a goroutine per idle connection
// costs when nothing else is per connection: 10,000 goroutines parked in a
// select on six channels, as esource's client.serve parks between events
// (wake, done, progress, probe, heartbeat, ctx.Done()), all shared. It
// reports the stack, heap (the g and its sudogs) and resident memory per
// goroutine after GC, the garbage collector having shrunk what stacks it
// could. "grown" first grows each stack to 16 KB, as a deep write path can,
// then parks; "grown-3gc" measures it after three more collections, each of
// which halves a stack that uses under a quarter of itself. "again" starts
// and ends a first crowd before the one measured, as a server that has run
// a while: the runtime then starts goroutines with the average stack size
// it found (GODEBUG adaptivestackstart, on by default). "again-1case"
// parks on one channel instead of six. Run each in a process of its own,
// since the runtime keeps what earlier ones taught it:
//
//	cd bench && go test -c -o /tmp/parked.test && for v in fresh grown grown-3gc again again-1case; do
//	  /tmp/parked.test -test.run '^$' -test.bench "ParkedGoroutine/$v\$" -test.benchtime 1x; done
func BenchmarkParkedGoroutine(b *testing.B) {
	for _, bc := range []struct {
		name  string
		grow  int  // bytes of stack to use before parking
		gcs   int  // collections before measuring
		again bool // a first crowd before
		one   bool // park on one channel
	}{
		{"fresh", 0, 2, false, false},
		{"grown", 12 << 10, 2, false, false},
		{"grown-3gc", 12 << 10, 5, false, false},
		{"again", 0, 2, true, false},
		{"again-1case", 0, 2, true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const n = 10000
			var stack, heap, rss float64
			for b.Loop() {
				if bc.again {
					parked(b, n, bc.grow, bc.gcs, bc.one)
				}
				s, h, r := parked(b, n, bc.grow, bc.gcs, bc.one)
				stack, heap, rss = s/n, h/n, r/n
			}
			b.ReportMetric(stack, "stack-B/goroutine")
			b.ReportMetric(heap, "heap-B/goroutine")
			b.ReportMetric(rss, "rss-B/goroutine")
		})
	}
}

// parked starts n parked goroutines and returns the growth of stack in use,
// heap in use and resident set, in bytes, after gcs collections.
func parked(b *testing.B, n, grow, gcs int, one bool) (stack, heap, rss float64) {
	measure := func(gcs int) (runtime.MemStats, uint64) {
		for range gcs {
			runtime.GC()
		}
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		r, err := vmRSS()
		if err != nil {
			b.Fatal(err)
		}
		return ms, r
	}
	wake, done, progress, probe, heartbeat := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	m0, r0 := measure(2)
	var started, exited sync.WaitGroup
	started.Add(n)
	exited.Add(n)
	for range n {
		if one {
			// A function of its own: its frame has no room for a select.
			go func() {
				defer exited.Done()
				started.Done()
				<-wake
			}()
			continue
		}
		go func() {
			defer exited.Done()
			if grow > 0 {
				useStack(grow)
			}
			started.Done()
			select {
			case <-wake:
			case <-done:
			case <-progress:
			case <-probe:
			case <-heartbeat:
			case <-ctx.Done():
			}
		}()
	}
	started.Wait()
	m1, r1 := measure(gcs)
	cancel()
	close(wake)
	exited.Wait()
	return float64(m1.StackInuse) - float64(m0.StackInuse),
		float64(m1.HeapInuse) - float64(m0.HeapInuse),
		float64(r1) - float64(r0)
}

// useStack uses about n bytes of stack, in frames of 1 KB.
//
//go:noinline
func useStack(n int) byte {
	var buf [1 << 10]byte
	buf[n%len(buf)] = byte(n)
	if n <= len(buf) {
		return buf[0]
	}
	return useStack(n-len(buf)) + buf[n%len(buf)]
}
