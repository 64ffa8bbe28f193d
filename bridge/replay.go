package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/esbridge/esbridge/esource"
)

// How a replay paces the flushes of what it sends to its client.
const (
	// replayFlushInterval bounds how long replayed events wait in a
	// client's buffer while more are read.
	replayFlushInterval = 10 * time.Millisecond
	// replayIdle is how long Next may keep a replay waiting before it
	// flushes what it sent, for readers that cannot tell (see Buffered).
	replayIdle = time.Millisecond
)

// Replay implements esource.History: it reads the source from the position
// in lastID and sends the client what follows, until it has caught up with
// the live log.
func (r *route) Replay(ctx context.Context, lastID string, rp *esource.Replay) error {
	tok, err := r.codec.decode(lastID)
	if err != nil {
		return err
	}
	var start Start
	switch tok.kind {
	case kindOrigin:
		start.Earliest = true
	case kindPosition, kindEvent:
		start.Position = tok.pos
	default:
		return fmt.Errorf("%w: %q is the ID of a live-only stream", ErrNoHistory, lastID)
	}
	pos := slices.Clone(start.Position)
	rd, err := r.src.Open(ctx, start)
	var exp *ExpiredError
	if errors.As(err, &exp) {
		if err := r.sendExpired(rp, lastID, exp); err != nil {
			return err
		}
		pos = slices.Clone(exp.Resume)
		rd, err = r.src.Open(ctx, startAt(pos))
	}
	if err != nil {
		return err
	}
	defer func() { rd.Close() }() // the last reader opened

	ids := idEncoder{c: r.codec}
	f := flusher{ctx: ctx, rp: rp, flushed: time.Now()}
	defer f.stop()
	for {
		m, err := f.next(rd)
		if errors.As(err, &exp) {
			// The broker deleted what this reader was about to read.
			rd.Close()
			if err := r.sendExpired(rp, lastID, exp); err != nil {
				return err
			}
			pos = slices.Clone(exp.Resume)
			if rd, err = r.src.Open(ctx, startAt(pos)); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		pos = advance(pos, &m)
		if err := f.send(r.tr.event(ids.message(pos, m.Partition), &m)); err != nil {
			return err
		}
	}
}

// sendExpired tells a replayed client that the broker no longer holds
// what it was to be sent next.
func (r *route) sendExpired(rp *esource.Replay, lastID string, expired *ExpiredError) error {
	gap := esource.Gap{Reason: "expired: " + expired.Error(), LastEventID: lastID}
	return rp.Send(gap.Event(""))
}

// A flusher sends a replay's events and decides when to flush them: every
// replayFlushInterval while the reader has more, and as soon as it would
// make the client wait, so that the client gets what was read and may join
// the log. A Buffered reader tells when it holds nothing more; for other
// readers, a wait of replayIdle in Next tells.
type flusher struct {
	ctx     context.Context // the replay's
	rp      *esource.Replay
	pending bool      // events sent and not flushed
	flushed time.Time // when they last were

	// While events are pending, Next waits with idle, a child of ctx that
	// the timer ends replayIdle after the last message. Both are made
	// again after the timer fired, so once per flush at most.
	idle    context.Context
	endIdle context.CancelFunc
	timer   *time.Timer
	armed   bool // the timer is set to end idle
}

// send sends ev, and flushes if the last flush is replayFlushInterval ago.
func (f *flusher) send(ev esource.Event) error {
	if err := f.rp.Send(ev); err != nil {
		return err
	}
	f.pending = true
	if time.Since(f.flushed) > replayFlushInterval {
		return f.flush()
	}
	return nil
}

// next returns rd's next message, flushing pending events before it
// would wait.
func (f *flusher) next(rd Reader) (Message, error) {
	for {
		if !f.pending {
			return rd.Next(f.ctx)
		}
		if b, ok := rd.(Buffered); ok {
			if b.Buffered() > 0 {
				return rd.Next(f.ctx)
			}
			if err := f.flush(); err != nil {
				return Message{}, err
			}
			continue
		}
		f.armIdle()
		m, err := rd.Next(f.idle)
		if err != nil && f.ctx.Err() == nil && f.idle.Err() != nil {
			// Next waited replayIdle: flush, then wait on.
			if err := f.flush(); err != nil {
				return Message{}, err
			}
			continue
		}
		return m, err
	}
}

// armIdle makes f.idle end replayIdle from now.
func (f *flusher) armIdle() {
	f.armed = true
	if f.idle != nil && f.idle.Err() == nil {
		f.timer.Reset(replayIdle)
		return
	}
	f.idle, f.endIdle = context.WithCancel(f.ctx)
	f.timer = time.AfterFunc(replayIdle, f.endIdle)
}

// flush writes the pending events to the client. It returns
// esource.ErrCaughtUp once the client can go on in the log.
func (f *flusher) flush() error {
	if f.armed && !f.timer.Stop() {
		f.idle = nil // ended by the timer, or about to be
	}
	f.armed = false
	f.pending = false
	f.flushed = time.Now()
	return f.rp.Flush()
}

// stop releases the idle timer.
func (f *flusher) stop() {
	if f.timer != nil {
		f.timer.Stop()
		f.endIdle()
	}
}
