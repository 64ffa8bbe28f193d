package esource

import (
	"sync"
	"time"
)

// wheelSlots is the number of slots of a wheel: a client whose deadline
// lies further ahead than wheelSlots steps wakes early, and waits again.
const wheelSlots = 256

// A wheel wakes waiting clients at their deadlines, for the heartbeat and
// the liveness probe: one timer per EventSource, not one per client. Its
// slots are channels, closed when the wheel passes them, so that a client
// waits on its deadline in the same select as on new events.
//
// A client keeps the channel it was given until it is closed, even after a
// write moved its deadline on: it wakes early then, sees it has nothing to
// do, and asks for the channel of its new deadline. So the wheel's lock is
// taken once per deadline, not once per write.
type wheel struct {
	step  time.Duration // the wheel's resolution
	mu    sync.Mutex
	start time.Time                 // when tick 0 was due
	tick  uint64                    // the last tick passed
	slots [wheelSlots]chan struct{} // nil when no client waits on it
	timer *time.Timer               // fires at the next tick while armed
	armed bool
}

// newWheel returns a wheel of the given resolution, idle until a client
// waits on it.
func newWheel(step time.Duration) *wheel {
	w := &wheel{step: step, start: time.Now()}
	w.timer = time.AfterFunc(time.Hour, w.turn)
	w.timer.Stop()
	return w
}

// wheelStep returns the resolution of a wheel that drives heartbeats and
// probes of the given intervals (0 for none): a tenth of the shorter one,
// at most 100 ms.
func wheelStep(intervals ...time.Duration) time.Duration {
	step := 100 * time.Millisecond
	for _, d := range intervals {
		if d > 0 {
			step = min(step, d/10)
		}
	}
	return max(step, time.Millisecond)
}

// at returns a channel closed at the first tick at or after t, or sooner,
// if t lies beyond the wheel's horizon.
func (w *wheel) at(t time.Time) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.armed {
		// The wheel was idle: it takes up the time where it stands.
		w.tick = w.ticks(time.Now())
		w.armed = true
		w.timer.Reset(w.due(w.tick + 1))
	}
	k := w.ticks(t)
	if t.After(w.start.Add(time.Duration(k) * w.step)) {
		k++ // the tick at or after t
	}
	k = min(max(k, w.tick+1), w.tick+wheelSlots)
	ch := &w.slots[k%wheelSlots]
	if *ch == nil {
		*ch = make(chan struct{})
	}
	return *ch
}

// turn passes the ticks that are due, closing their slots, and arms the
// timer for the next tick while any client waits.
func (w *wheel) turn() {
	w.mu.Lock()
	defer w.mu.Unlock()
	end := w.ticks(time.Now())
	for n := 0; w.tick < end && n < wheelSlots; n++ {
		w.tick++
		ch := &w.slots[w.tick%wheelSlots]
		if *ch != nil {
			close(*ch)
			*ch = nil
		}
	}
	w.tick = max(w.tick, end) // after a long sleep of the machine, say
	waiting := false
	for _, ch := range w.slots {
		if ch != nil {
			waiting = true
			break
		}
	}
	w.armed = waiting
	if waiting {
		w.timer.Reset(w.due(w.tick + 1))
	}
}

// ticks returns the number of whole steps from the wheel's start to t.
func (w *wheel) ticks(t time.Time) uint64 {
	d := t.Sub(w.start)
	if d < 0 {
		return 0
	}
	return uint64(d / w.step)
}

// due returns how long from now tick k is.
func (w *wheel) due(k uint64) time.Duration {
	return time.Until(w.start.Add(time.Duration(k) * w.step))
}

// nextDue returns when a stream is next due a look at its connection (at
// probeAt, if probing) or a heartbeat (heartbeat after it was last written
// to, at wroteAt, if heartbeat is not 0), whichever comes first; false
// for neither.
func nextDue(probing bool, probeAt time.Time, heartbeat time.Duration, wroteAt time.Time) (time.Time, bool) {
	var due time.Time
	if probing {
		due = probeAt
	}
	if heartbeat > 0 {
		if hb := wroteAt.Add(heartbeat); due.IsZero() || hb.Before(due) {
			due = hb
		}
	}
	return due, !due.IsZero()
}
