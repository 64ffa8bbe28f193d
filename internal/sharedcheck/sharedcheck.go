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
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
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
