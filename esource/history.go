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

// An Ordering is a History whose event IDs are positions that can be
// compared. Where a stream merges partitions as their events come, a reader
// of the source interleaves them otherwise than the live log did, so a
// replayed client may never send an ID that the log holds; with an Ordering
// it joins the log where its position stands, and the log skips the events
// it has already received. The methods must be cheap, pure functions of
// their arguments, and report false for IDs they cannot compare.
type Ordering interface {
	History

	// Covers reports whether a client whose last event was last has
	// received the event id and every event before it.
	Covers(last, id string) bool

	// Received reports whether a client whose last event was last has
	// received the event id.
	Received(last, id string) bool

	// Merge returns the ID a client at last holds once it receives the
	// event id, which it had not: the log's own ID for the event may stand
	// behind the client in other partitions, and would resume it there.
	Merge(last, id string) string
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
	skip   string // with an Ordering, the position whose events the log skips
	sent   int    // events sent with an ID
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
		// An ID the log holds is a cheap find; comparing positions costs
		// more, and is done for one event in orderingStride, and by Flush.
		r.sent++
		if seq, ok := es.ids[ev.ID]; ok {
			r.join(seq+1, "")
		} else if r.sent%orderingStride == 0 {
			r.tryJoin()
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

// join moves the client into the log at seq, skipping what skip has
// received, and ends the replay. es.mu must be held.
func (r *Replay) join(seq uint64, skip string) {
	r.joined, r.joinAt, r.skip = true, seq, skip
	r.cancel()
}

// Flush writes the events sent so far to the client; a History should call
// it before it waits on its source. It returns ErrCaughtUp if the log holds
// what follows them: then the caller must return.
func (r *Replay) Flush() error {
	if len(r.buf) > 0 {
		err := r.c.sink.write([][]byte{r.buf})
		r.buf = r.buf[:0]
		if err != nil {
			return sinkError{err}
		}
	}
	es := r.c.es
	es.mu.Lock()
	defer es.mu.Unlock()
	if !r.joined {
		r.tryJoin()
	}
	if r.joined {
		return ErrCaughtUp
	}
	return nil
}

// orderingStride is how many events Send sends between two comparisons of
// positions with the log.
const orderingStride = 32

// tryJoin joins the log if it can serve the client from r.last on.
// es.mu must be held.
func (r *Replay) tryJoin() {
	if seq, skip, ok := r.c.es.joinPoint(r.last); ok {
		r.join(seq, skip)
	}
}

// sinkError marks an error of the client's connection, which ends it.
type sinkError struct{ err error }

func (e sinkError) Error() string { return e.err.Error() }
func (e sinkError) Unwrap() error { return e.err }
