// Package sharedcheck runs one periodic check for any number of watchers:
// a source checks its stream once an interval, however many readers
// want to know.
package sharedcheck

import (
	"context"
	"sync"
	"time"
)

// A Check runs a check every Interval while it has watchers, and hands
// each outcome to all of them. The zero Check is ready for use once
// Interval is set; it must not be copied after first use.
type Check[T any] struct {
	Interval time.Duration
	// Soonest is the least time between two checks when a watcher asks
	// for one sooner than the next interval (Soon).
	Soonest time.Duration

	soon     chan struct{} // holds a request for a check at once (Soon)
	mu       sync.Mutex
	watchers int
	stop     context.CancelFunc
	last     T
	checked  chan struct{} // closed and replaced after each check
}

// Watch registers a watcher. The first one starts the checks with check,
// which is given the previous outcome (the zero T at first) and returns
// the new one; it must return soon after its ctx ends. Watch returns the
// function that unregisters the watcher; the last one stops the checks.
func (c *Check[T]) Watch(check func(ctx context.Context, prev T) T) (unwatch func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checked == nil {
		c.checked = make(chan struct{})
		c.soon = make(chan struct{}, 1)
	}
	if c.watchers++; c.watchers == 1 {
		var zero T
		c.last = zero
		ctx, cancel := context.WithCancel(context.Background())
		c.stop = cancel
		go c.run(ctx, check)
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.watchers--; c.watchers == 0 {
			c.stop()
		}
	}
}

// run checks every Interval until ctx ends.
func (c *Check[T]) run(ctx context.Context, check func(context.Context, T) T) {
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-t.C:
		case <-c.soon:
			if wait := c.Soonest - time.Since(last); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
			}
		case <-ctx.Done():
			return
		}
		select {
		case <-c.soon: // asked for meanwhile: this check answers it
		default:
		}
		last = time.Now()
		c.mu.Lock()
		prev := c.last
		c.mu.Unlock()
		out := check(ctx, prev)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.last = out
		close(c.checked)
		c.checked = make(chan struct{})
		c.mu.Unlock()
	}
}

// Soon asks for a check at once, rather than at the next interval, but
// not sooner than Soonest after the last one. Requests made before that
// check begins are answered by it.
func (c *Check[T]) Soon() {
	c.mu.Lock()
	soon := c.soon
	c.mu.Unlock()
	if soon == nil {
		return // no watcher yet: no check to hasten
	}
	select {
	case soon <- struct{}{}:
	default: // asked already
	}
}

// Next waits for the next check and returns its outcome; false if ctx
// ended first. Only a watcher gets one.
func (c *Check[T]) Next(ctx context.Context) (T, bool) {
	c.mu.Lock()
	if c.checked == nil {
		c.checked = make(chan struct{})
	}
	checked := c.checked
	c.mu.Unlock()
	select {
	case <-checked:
	case <-ctx.Done():
		var zero T
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, true
}
