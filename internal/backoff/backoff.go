// Package backoff paces retries: the bridge's reopening of a source, a
// Kafka partition's reconnection, a RabbitMQ redial.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// A Backoff is the wait between retries: from Min, doubling after each
// wait up to Max, each wait jittered into [d/2, 3d/2) so that many
// retrying peers spread out. The zero Backoff waits 100 ms up to 5 s.
// It is used by one goroutine at a time.
type Backoff struct {
	Min, Max time.Duration
	d        time.Duration // the next wait before jitter; 0 means Min
}

// Next returns the next wait and doubles the one after.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 5 * time.Second
	}
	hi = max(hi, lo)
	d := max(b.d, lo)
	b.d = min(2*d, hi)
	return d/2 + rand.N(d)
}

// Wait waits for the next wait, or until ctx ends, and reports whether
// it waited the whole time.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep waits for d, or until ctx ends, and reports whether it waited d.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Reset makes the next wait Min again, after a success.
func (b *Backoff) Reset() { b.d = 0 }
