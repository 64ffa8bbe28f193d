package esource

import (
	"context"
)

// A History replays events that the log no longer holds, typically by
// reading them again from the broker they came from. An EventSource calls it
// for a client whose Last-Event-ID its log does not hold, and for a client
// that fell behind its log.
type History interface {
	// Replay sends to r, in order, the events that follow the event lastID,
	// until r.Send returns ErrCaughtUp: then the client continues in the
	// log, with no event twice and none skipped, and Replay returns.
	//
	// Replay runs in the client's writer goroutine. It should follow its
	// source live if it reaches the end before the log has caught up (the
	// log may lag behind the source), and call r.Flush before it blocks.
	// ctx is cancelled when the client goes away or joins the log in the
	// meantime. To tell the client of events it cannot replay, it may Send
	// a Gap event. If Replay returns before the client caught up, the
	// client is sent a gap event naming the error, and continues in the log
	// as it would without a History.
	Replay(ctx context.Context, lastID string, r *Replay) error
}

// A Replay is one client's catch-up with the log, passed to History.Replay.
// Its methods may only be called from within Replay.
type Replay struct {
	c      *client
	cancel context.CancelFunc
	buf    []byte

	// Guarded by c.es.mu.
	last   string // ID of the last event sent, or of the resume point
	joined bool
	joinAt uint64 // seq the client continues at in the log, once joined
}

// Send writes ev to the client. It returns ErrCaughtUp once the log holds
// what follows: then the caller must return, and the log sends the rest. It
// returns ErrInvalidEvent for an event that cannot be encoded, and the
// client's write error if it went away.
func (r *Replay) Send(ev Event) error {
	n := len(r.buf)
	var err error
	if r.buf, err = ev.appendWire(r.buf); err != nil {
		return err
	}
	es := r.c.es
	es.mu.Lock()
	if r.joined {
		// The log took over after the previous event: ev is its to send.
		es.mu.Unlock()
		r.buf = r.buf[:n]
		return ErrCaughtUp
	}
	if ev.ID != "" {
		r.last = ev.ID
		if seq, ok := es.ids[ev.ID]; ok {
			r.join(seq + 1)
		}
	}
	joined := r.joined
	es.mu.Unlock()
	if joined {
		return ErrCaughtUp
	}
	if len(r.buf) >= maxBatch {
		return r.Flush()
	}
	return nil
}

// join moves the client into the log at seq and ends the replay.
// es.mu must be held.
func (r *Replay) join(seq uint64) {
	r.joined, r.joinAt = true, seq
	r.cancel()
}

// Flush writes the events sent so far to the client.
func (r *Replay) Flush() error {
	if len(r.buf) == 0 {
		return nil
	}
	err := r.c.sink.write([][]byte{r.buf})
	r.buf = r.buf[:0]
	if err != nil {
		return sinkError{err}
	}
	return nil
}

// sinkError marks an error of the client's connection, which ends it.
type sinkError struct{ err error }

func (e sinkError) Error() string { return e.err.Error() }
func (e sinkError) Unwrap() error { return e.err }
