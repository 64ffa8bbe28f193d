package esource

import (
	"context"
	"sync/atomic"
	"time"
)

// A History replays events that the log no longer holds, typically by
// reading them again from the broker they came from. An EventSource calls it
// for a client whose Last-Event-ID its log does not hold, and for a client
// that fell behind its log.
type History interface {
	// Replay sends to r, in order, the events that follow from, the
	// client's start (its LastEventID, and with an Ordering its decoded
	// Position), until r.Send returns ErrCaughtUp: then the client
	// continues in the log, with no event twice and none skipped, and
	// Replay returns.
	//
	// Replay runs in the client's writer goroutine. It should follow its
	// source live if it reaches the end before the log has caught up (the
	// log may lag behind the source), and call r.Flush before it blocks.
	// ctx is cancelled when the client goes away or joins the log in the
	// meantime. To tell the client of events it cannot replay, it may Send
	// a Gap event. If Replay returns before the client caught up, the
	// client is sent a gap event naming the error, and continues in the log
	// as it would without a History.
	Replay(ctx context.Context, from Start, r *Replay) error
}

// An Ordering is a History whose event IDs are positions that can be
// compared. Where a stream merges partitions as their events come, a reader
// of the source interleaves them otherwise than the live log did, so a
// replayed client may never send an ID that the log holds; with an Ordering
// it joins the log where its position stands, and the log skips the events
// it has already received.
//
// Positions are opaque to the EventSource: it decodes each ID once, with
// Decode (an event's when it is published, outside any lock; a client's
// when it connects, in StartOf, unless the handler made the Start
// itself), keeps the result, and hands it back to the other methods, which
// compare decoded values. They must be cheap, pure, safe
// for concurrent use, and should not allocate.
type Ordering interface {
	History

	// Decode returns the position of an event ID. It reports false for
	// an ID that is not a position of the stream.
	Decode(id string) (Position, bool)

	// Covers reports whether a client at last has received the event at p
	// and every event before it.
	Covers(last, p Position) bool

	// Received reports whether a client at last has received the event at
	// p.
	Received(last, p Position) bool

	// Merge returns where a client at last stands once it receives the
	// event at p, which it had not, and appends the ID of that position
	// to id: the event's own ID may stand behind the client in other
	// partitions, and would resume it there. last is the client's
	// position or one that an earlier Merge returned; Merge may change
	// and return the latter, so that a long catch-up allocates nothing
	// per event.
	Merge(last, p Position, id []byte) (Position, []byte)
}

// A Position is where an event stands in its stream, as an Ordering
// decodes it from the event's ID. The EventSource only keeps it and hands
// it back to the Ordering.
type Position any

// An Encoded event is an event encoded once, to be sent to many clients of
// a History (see [Replay.SendEncoded]) as the log's events are.
type Encoded struct {
	id     string
	pos    Position
	wire   []byte
	typ    string   // for filters
	labels []string // for filters
	always bool     // sent whatever the filter
}

// Encode encodes ev, with pos its position as the EventSource's Ordering
// would decode it from ev.ID (nil if it has none). It returns
// ErrInvalidEvent for an event that cannot be encoded.
func Encode(ev Event, pos Position) (Encoded, error) {
	e, _, err := AppendEncode(nil, ev, pos)
	return e, err
}

// AppendEncode is Encode, appending the encoding to dst, and returns dst
// extended. The event refers to the bytes appended, which must not change:
// a History that encodes the events it reads one after another into a
// buffer it only appends to (taking a new one when it is full) allocates
// once per buffer, not per event, and its events sent in a row go to the
// client in one piece. On error dst is returned unchanged.
func AppendEncode(dst []byte, ev Event, pos Position) (Encoded, []byte, error) {
	n := len(dst)
	dst, err := ev.appendWire(dst)
	return Encoded{id: ev.ID, pos: pos, wire: dst[n:], typ: ev.Type, labels: ev.Labels, always: alwaysSent(&ev)}, dst, err
}

// ID returns the event's ID.
func (e Encoded) ID() string { return e.id }

// Len returns the size of the event's encoding.
func (e Encoded) Len() int { return len(e.wire) }

// A GapError, returned by History.Replay, says in a stable code why the
// client could not be replayed: the client's gap event carries its Reason
// and Message, and Err goes to the log.
type GapError struct {
	Reason  string // a stable code, such as "malformed-id"
	Message string // a short text for people
	Err     error  // the cause, if any
}

func (e *GapError) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason + ": " + e.Message
}

func (e *GapError) Unwrap() error { return e.Err }

// A Replay is one client's catch-up with the log, passed to History.Replay.
// Its methods may only be called from within Replay. What it sends is
// written to the client at each Flush, and when a batch is full.
type Replay struct {
	c      *client
	cancel context.CancelFunc
	bufs   [][]byte // sent, not yet written: of own, of resume, or of shared events
	own    []byte   // the encodings of Send
	resume resumer  // the hand-off rule, for SendEncoded
	size   int      // bytes in bufs
	sent   string   // the ID of the last event sent, if not yet written
	sentAs []byte   // or that ID in resume.ids, if sent with the client's own
	sentAt Position // its position, if known
	behind bool     // the client's browser stands before the last event sent or skipped
	passed int      // events skipped since the last Flush

	joined atomic.Bool // set under es.mu: the log took the client over

	// Written under c.es.mu, read or write locked (see Flush).
	last    string   // ID of the last event written, or of the resume point
	lastPos Position // its position
	joinAt  uint64   // seq the client continues at in the log, once joined
	skip    Position // with an Ordering, the position whose events the log skips
}

// Send sends ev to the client. It returns ErrCaughtUp once the log holds
// what follows: then the caller must return, and the log sends the rest. It
// returns ErrInvalidEvent for an event that cannot be encoded, and the
// client's write error if it went away.
func (r *Replay) Send(ev Event) error {
	if r.joined.Load() {
		return ErrCaughtUp
	}
	if !r.passes(ev.Type, ev.Labels, alwaysSent(&ev)) {
		if err := checkID(ev.ID); err != nil {
			return err
		}
		return r.skipped(ev.ID, nil, nil)
	}
	n := len(r.own)
	var err error
	if r.own, err = ev.appendWire(r.own); err != nil {
		return err
	}
	r.c.es.stats.gap(&ev)
	return r.add(r.own[n:len(r.own):len(r.own)], ev.ID, nil)
}

// SendEncoded sends e, as Send does, without encoding it again: the
// client's write refers to e's bytes, which must not change. With an
// Ordering, and e's position, it applies the hand-off rule (see
// Ordering): an event the client has received is skipped, and one it
// stands past in other partitions goes with the client's own ID, so that
// a History may send every event its reader meets, in its reader's order.
func (r *Replay) SendEncoded(e Encoded) error {
	if r.joined.Load() {
		return ErrCaughtUp
	}
	received, idLine := r.resume.step(e.pos)
	switch {
	case received:
		return nil
	case idLine != nil:
		return r.sendAs(e, idLine)
	case !r.passes(e.typ, e.labels, e.always):
		return r.skipped(e.id, nil, e.pos)
	}
	return r.add(e.wire, e.id, e.pos)
}

// Restart tells r that the events sent from now on come from a reader
// that may stand behind the client in some partitions (one shared with
// clients further back, say, after the History's last reader left it
// behind): SendEncoded skips again what the client has received, from
// where the events sent so far have brought it.
func (r *Replay) Restart() {
	r.settle()
	pos := r.sentAt
	if r.sent == "" {
		pos = r.lastPos // what was written, or the client's start
	}
	if pos != nil {
		r.resume.skip = pos
	}
}

// settle makes the ID of the last event sent, if any, a string of its own
// with its position: an ID sent with the client's own lies in a buffer
// that the next write reuses.
func (r *Replay) settle() {
	if r.sentAs != nil {
		r.sent, r.sentAs = string(r.sentAs), nil
	}
	if r.sent != "" && r.sentAt == nil {
		r.sentAt = r.c.es.position(r.sent)
	}
}

// sendAs sends e with the ID line idLine, of r.resume, in place of its
// own: only that line is the client's own, the rest of the event is
// referred to.
func (r *Replay) sendAs(e Encoded, idLine []byte) error {
	id := idOf(idLine)
	if !r.passes(e.typ, e.labels, e.always) {
		return r.skipped("", id, nil)
	}
	r.push(idLine)
	r.push(withoutID(e.wire, e.id))
	r.sent, r.sentAs, r.sentAt = "", id, nil
	r.behind = false
	return r.flushFull()
}

func (r *Replay) add(wire []byte, id string, pos Position) error {
	r.push(wire)
	if id != "" {
		r.sent, r.sentAs, r.sentAt = id, nil, pos
		r.behind = false
	}
	return r.flushFull()
}

// passes reports whether the client's filter lets an event through.
func (r *Replay) passes(typ string, labels []string, always bool) bool {
	f := r.c.filter
	return f == nil || always || f.Match(typ, labels)
}

// skipped records an event the client's filter skips, with ID id (or
// idAs, the client's own, in r.resume) at pos: the client stands past it, and its
// browser will be told so by a progress frame. Every so often it flushes,
// so that a long skipped stretch is told, and the log may take the client
// over.
func (r *Replay) skipped(id string, idAs []byte, pos Position) error {
	switch {
	case id != "":
		r.sent, r.sentAs, r.sentAt = id, nil, pos
	case idAs != nil:
		r.sent, r.sentAs, r.sentAt = "", idAs, nil
	default:
		return nil
	}
	r.behind = true
	if r.passed++; r.passed >= maxBatchBufs {
		return r.Flush()
	}
	return nil
}

// push adds wire to what is to be written.
func (r *Replay) push(wire []byte) {
	if k := len(r.bufs) - 1; k >= 0 && follows(r.bufs[k], wire) {
		r.bufs[k] = r.bufs[k][:len(r.bufs[k])+len(wire)]
	} else {
		r.bufs = append(r.bufs, wire)
	}
	r.size += len(wire)
}

// flushFull flushes once a batch is full.
func (r *Replay) flushFull() error {
	if r.size >= maxBatch || len(r.bufs) >= maxBatchBufs {
		return r.Flush()
	}
	return nil
}

// Flush writes the events sent so far to the client; a History should call
// it before it waits on its source (or call Wait). It returns ErrCaughtUp
// if the log holds what follows them: then the caller must return.
func (r *Replay) Flush() error {
	es := r.c.es
	r.settle()
	// A read lock: what it changes is r's, which only Publish (under the
	// write lock) touches too. Many replays flush at once.
	es.mu.RLock()
	if r.joined.Load() {
		// The log took the client over at r.last, before what was sent
		// since: that is the log's to send.
		es.mu.RUnlock()
		r.reset()
		return ErrCaughtUp
	}
	if r.sent != "" {
		r.last, r.lastPos = r.sent, r.sentAt
	}
	r.tryJoin()
	joined := r.joined.Load()
	es.mu.RUnlock()
	r.passed = 0
	if r.behind && r.last != "" {
		now := r.c.es.since()
		if due, _ := r.c.progressDue(now); due {
			r.push(progressLine(r.last))
			r.behind, r.c.progressAt = false, now
		}
	}
	if len(r.bufs) > 0 {
		err := r.c.write(r.bufs)
		r.reset()
		if err != nil {
			return sinkError{err}
		}
	}
	if joined {
		return ErrCaughtUp
	}
	return nil
}

// reset forgets what was sent, once written or discarded.
func (r *Replay) reset() {
	clear(r.bufs)
	r.bufs, r.own, r.size = r.bufs[:0], r.own[:0], 0
	r.resume.reset()
	r.sent, r.sentAs, r.sentAt = "", nil, nil
	r.passed = 0
}

// Wait flushes what was sent, then waits until ready is closed or ctx
// ends, sending the client heartbeats meanwhile, as the log would. It
// returns ErrCaughtUp if the log took the client over, else ctx's error,
// or nil when ready is closed.
func (r *Replay) Wait(ctx context.Context, ready <-chan struct{}) error {
	if err := r.Flush(); err != nil {
		return err
	}
	var heartbeat <-chan time.Time
	var timer *time.Timer
	d := r.c.heartbeat
	if d > 0 {
		timer = time.NewTimer(d)
		defer timer.Stop()
		heartbeat = timer.C
	}
	for {
		select {
		case <-ready:
			return nil
		case <-ctx.Done():
			return r.ctxErr(ctx)
		case <-heartbeat:
			if err := r.c.write([][]byte{heartbeatLine}); err != nil {
				return sinkError{err}
			}
			timer.Reset(d)
		}
	}
}

// ctxErr returns ErrCaughtUp if ctx ended because the log took the client
// over, else ctx's error.
func (r *Replay) ctxErr(ctx context.Context) error {
	if r.joined.Load() {
		return ErrCaughtUp
	}
	return ctx.Err()
}

// join moves the client into the log at seq, skipping what skip has
// received, and ends the replay. es.mu must be held, at least for
// reading.
func (r *Replay) join(seq uint64, skip Position) {
	r.joinAt, r.skip = seq, skip
	r.joined.Store(true)
	r.cancel()
}

// tryJoin joins the log if it can serve the client from r.last on.
// es.mu must be held, at least for reading.
func (r *Replay) tryJoin() {
	if seq, skip, ok := r.c.es.joinPoint(r.last, r.lastPos); ok {
		r.join(seq, skip)
	}
}

// sinkError marks an error of the client's connection, which ends it.
type sinkError struct{ err error }

func (e sinkError) Error() string { return e.err.Error() }
func (e sinkError) Unwrap() error { return e.err }
