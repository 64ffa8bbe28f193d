package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/backoff"
)

// replayFlushInterval bounds how long replayed events wait in a client's
// buffer while more are read.
const replayFlushInterval = 10 * time.Millisecond

// A route serves one source's stream at one path: one live reader feeds an
// EventSource, which fans it out; clients that must catch up are replayed
// from the source by the route's History method.
type route struct {
	path    string
	src     Source
	info    Info
	opts    Options
	codec   codec
	tr      translator
	es      *esource.EventSource
	epoch   uint64 // instance epoch, for sources without history
	seq     uint64 // live sequence, for sources without history
	ready   atomic.Bool
	decoded atomic.Pointer[decodedID] // see logPosition
	logger  *slog.Logger
}

// run reads the source live and publishes every message, reopening the
// reader where it left off after an error, until ctx ends.
func (r *route) run(ctx context.Context) {
	var start Start // the first reader starts with the next message
	opened := false
	var retry backoff.Backoff // 100 ms up to 5 s
	for ctx.Err() == nil {
		rd, err := r.src.Open(ctx, start)
		if errors.Is(err, ErrExpired) {
			// Retention deleted messages the live reader had not read:
			// every client lost them.
			r.logger.Warn("messages expired before they were read", "route", r.path, "err", err)
			r.publishLoss("expired: " + err.Error())
			start = startAt(skipExpired(start.Position, err))
			continue
		}
		if err != nil {
			r.ready.Store(false)
			if ctx.Err() == nil {
				r.logger.Warn("source unavailable; retrying", "route", r.path, "stream", r.info.Stream, "err", err)
			}
			retry.Wait(ctx)
			continue
		}
		switch {
		case opened && !r.info.History:
			// A source without history lost what came while it was away.
			r.publishGap("source-reconnected")
		case !opened && r.info.History:
			r.publishStart(rd.Position())
		}
		opened = true
		r.ready.Store(true)
		retry.Reset()
		pos, err := r.follow(ctx, rd)
		rd.Close()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrExpired) {
			// The broker deleted what the live reader was about to read
			// (a source that finds out only when reading): as above.
			r.logger.Warn("messages expired before they were read", "route", r.path, "err", err)
			r.publishLoss("expired: " + err.Error())
			start = startAt(skipExpired(pos, err))
			continue
		}
		r.ready.Store(false)
		r.logger.Warn("source reader failed; reopening", "route", r.path, "stream", r.info.Stream, "err", err)
		start = Start{Position: pos} // nil for a source without history: latest
		retry.Wait(ctx)
	}
}

// follow publishes rd's messages until it fails, and returns the position
// after the last message published.
func (r *route) follow(ctx context.Context, rd Reader) (Position, error) {
	pos := slices.Clone(rd.Position())
	ids := idEncoder{c: r.codec}
	for {
		m, err := rd.Next(ctx)
		switch {
		case errors.Is(err, ErrLost):
			r.publishGap("messages-lost")
			continue
		case err != nil:
			return pos, err
		}
		var id string
		if r.info.History {
			pos = advance(pos, &m)
			id = ids.message(pos, m.Partition)
		} else {
			r.seq++
			id = r.codec.live(r.epoch, r.seq)
		}
		if err := r.es.Publish(r.tr.event(id, &m)); err != nil {
			if errors.Is(err, esource.ErrClosed) {
				return pos, err
			}
			r.logger.Error("message cannot be sent", "route", r.path, "id", id, "err", err)
		}
	}
}

// publishGap tells every client of a live-only route that messages were
// lost. Its ID moves them past the loss.
func (r *route) publishGap(reason string) {
	r.seq++
	gap := esource.Gap{Reason: reason}.Event(r.codec.live(r.epoch, r.seq))
	if err := r.es.Publish(gap); err != nil && !errors.Is(err, esource.ErrClosed) {
		r.logger.Error("gap cannot be sent", "route", r.path, "err", err)
	}
}

// publishStart publishes an event with the position the live reader
// starts at as its ID, and no data: browsers receive nothing, but a client
// that resumes from that very position (as all do after a restart of an
// idle stream) finds it in the log and needs no replay from the broker.
func (r *route) publishStart(pos Position) {
	if pos == nil {
		return
	}
	if err := r.es.Publish(esource.Event{ID: r.codec.position(pos)}); err != nil && !errors.Is(err, esource.ErrClosed) {
		r.logger.Error("start position cannot be published", "route", r.path, "err", err)
	}
}

// isReady reports whether the route's live reader is open and its source
// connected.
func (r *route) isReady() bool {
	if c, ok := r.src.(Connectivity); ok && !c.Connected() {
		return false
	}
	return r.ready.Load()
}

// Covers implements esource.Ordering: a client at last has received the
// event id and all before it when it is at or past id's position in every
// partition.
func (r *route) Covers(last, id string) bool {
	v, ok1 := r.positionOf(last)
	l, ok2 := r.logPosition(id)
	if !ok1 || !ok2 {
		return false
	}
	for i, off := range l {
		if off > 0 && (i >= len(v) || v[i] < off) {
			return false
		}
	}
	return true
}

// Received implements esource.Ordering: a client at last has received the
// event id when it is past it in the event's partition.
func (r *route) Received(last, id string) bool {
	t, err := r.codec.decode(id)
	if err != nil || t.kind != kindEvent {
		return r.Covers(last, id)
	}
	v, ok := r.positionOf(last)
	p := t.partition
	return ok && p < len(v) && v[p] >= t.pos[p]
}

// logPosition is positionOf for IDs of the log, which esource compares
// again and again (the oldest event's): it keeps the last one decoded.
func (r *route) logPosition(id string) (Position, bool) {
	if d := r.decoded.Load(); d != nil && d.id == id {
		return d.pos, true
	}
	pos, ok := r.positionOf(id)
	if ok {
		r.decoded.Store(&decodedID{id: id, pos: pos})
	}
	return pos, ok
}

// A decodedID is an ID with the position it stands for.
type decodedID struct {
	id  string
	pos Position
}

// Merge implements esource.Ordering: the ID of the event id for a client
// at last, which is past id's position in some partitions.
func (r *route) Merge(last, id string) string {
	t, err := r.codec.decode(id)
	v, ok := r.positionOf(last)
	if err != nil || !ok || (t.kind != kindEvent && t.kind != kindPosition) {
		return id
	}
	pos := slices.Clone(t.pos)
	for i := range min(len(pos), len(v)) {
		pos[i] = max(pos[i], v[i])
	}
	if t.kind == kindPosition {
		return r.codec.position(pos)
	}
	return r.codec.event(pos, t.partition)
}

// positionOf returns the position an ID stands for.
func (r *route) positionOf(id string) (Position, bool) {
	t, err := r.codec.decode(id)
	switch {
	case err != nil:
		return nil, false
	case t.kind == kindOrigin:
		return Position{}, true
	case t.kind == kindPosition || t.kind == kindEvent:
		return t.pos, true
	}
	return nil, false
}

// publishLoss tells every client of a route with history that messages
// were lost to all. The gap has no ID: the next message's ID moves clients
// past the loss.
func (r *route) publishLoss(reason string) {
	if err := r.es.Publish(esource.Gap{Reason: reason}.Event("")); err != nil && !errors.Is(err, esource.ErrClosed) {
		r.logger.Error("gap cannot be sent", "route", r.path, "err", err)
	}
}

// advance returns pos moved past m.
func advance(pos Position, m *Message) Position {
	for len(pos) <= m.Partition {
		pos = append(pos, 0)
	}
	pos[m.Partition] = m.Offset + 1
	return pos
}

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
	if errors.Is(err, ErrExpired) {
		if pos, err = r.sendExpired(rp, lastID, pos, err); err != nil {
			return err
		}
		rd, err = r.src.Open(ctx, startAt(pos))
	}
	if err != nil {
		return err
	}
	defer func() {
		if rd != nil {
			rd.Close()
		}
	}()

	ids := idEncoder{c: r.codec}
	flushed := time.Now()
	for {
		m, err := rd.Next(ctx)
		if errors.Is(err, ErrExpired) {
			// The broker deleted what this reader was about to read.
			rd.Close()
			if pos, err = r.sendExpired(rp, lastID, rd.Position(), err); err != nil {
				return err
			}
			if rd, err = r.src.Open(ctx, startAt(pos)); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		pos = advance(pos, &m)
		if err := rp.Send(r.tr.event(ids.message(pos, m.Partition), &m)); err != nil {
			return err
		}
		// Flush before the reader would wait (it says so, or time says
		// so): the client gets what was read, and may join the log.
		if now := time.Now(); now.Sub(flushed) > replayFlushInterval || drained(rd) {
			if err := rp.Flush(); err != nil {
				return err
			}
			flushed = now
		}
	}
}

// A Buffered reader tells how many messages it holds that Next returns
// without waiting.
type Buffered interface {
	Buffered() int
}

// drained reports whether rd is a Buffered reader that holds no message.
func drained(rd Reader) bool {
	b, ok := rd.(Buffered)
	return ok && b.Buffered() == 0
}

// sendExpired tells a replayed client that the broker no longer holds
// what follows pos, and returns where its stream goes on: the nearest
// position the broker holds, as the source's error tells, or the start.
func (r *route) sendExpired(rp *esource.Replay, lastID string, pos Position, expired error) (Position, error) {
	gap := esource.Gap{Reason: "expired: " + expired.Error(), LastEventID: lastID}
	if err := rp.Send(gap.Event("")); err != nil {
		return nil, err
	}
	return skipExpired(pos, expired), nil
}

// skipExpired returns the position after pos that the broker still holds,
// when the ErrExpired error says which (Advance), else nil: the earliest.
func skipExpired(pos Position, expired error) Position {
	var adv interface{ Advance(Position) Position }
	if pos != nil && errors.As(expired, &adv) {
		return adv.Advance(pos)
	}
	return nil
}

// startAt returns the start at pos, or at the earliest message for nil.
func startAt(pos Position) Start {
	if pos == nil {
		return Start{Earliest: true}
	}
	return Start{Position: pos}
}

// ServeHTTP serves the route's event stream.
func (r *route) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.opts.Earliest && req.Header.Get("Last-Event-ID") == "" && req.URL.Query().Get("lastEventId") == "" {
		// A new client starts at the beginning of the stream.
		req = req.Clone(req.Context())
		req.Header.Set("Last-Event-ID", r.codec.origin())
	}
	r.es.ServeHTTP(w, req)
}
