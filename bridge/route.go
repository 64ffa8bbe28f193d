package bridge

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"

	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/backoff"
)

// A route serves one source's stream at one path: one live reader feeds an
// EventSource, which fans it out; clients that must catch up ride the
// route's catch-up readers (see catchup.go) through its History method.
type route struct {
	ctx      context.Context // ends when the bridge has shut down
	stop     context.CancelFunc
	catchUps *catchUps
	live     atomic.Pointer[Position] // where the live reader stands, for Replay
	path     string
	src      Source
	info     Info
	opts     Options
	codec    codec
	tr       translator
	es       *esource.EventSource
	epoch    uint64 // instance epoch, for sources without history
	seq      uint64 // live sequence, for sources without history
	ready    atomic.Bool
	logger   *slog.Logger
}

// run reads the source live and publishes every message, reopening the
// reader where it left off after an error, until ctx ends.
func (r *route) run(ctx context.Context) {
	start := Start{Live: true} // the first reader starts with the next message
	opened := false
	var retry backoff.Backoff // 100 ms up to 5 s
	for ctx.Err() == nil {
		rd, err := r.src.Open(ctx, start)
		var exp *ExpiredError
		if errors.As(err, &exp) {
			// Retention deleted messages the live reader had not read:
			// every client lost them.
			start = r.expired(exp)
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
			r.publishGap("source-reconnected", "the source reconnected and lost what came meanwhile")
		case !opened && r.info.History:
			r.publishStart(rd.Position())
		}
		r.setLive(rd.Position())
		opened = true
		r.ready.Store(true)
		retry.Reset()
		pos, err := r.follow(ctx, rd)
		rd.Close()
		if ctx.Err() != nil {
			return
		}
		if errors.As(err, &exp) {
			// The broker deleted what the live reader was about to read
			// (a source that finds out only when reading): as above.
			start = r.expired(exp)
			continue
		}
		r.ready.Store(false)
		r.logger.Warn("source reader failed; reopening", "route", r.path, "stream", r.info.Stream, "err", err)
		start = Start{Position: pos, Live: true} // nil for a source without history: latest
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
			r.publishGap("messages-lost", "the source lost messages")
			continue
		case err != nil:
			return pos, err
		}
		var id string
		if r.info.History {
			pos = advance(pos, &m)
			id = ids.message(pos, m.Partition)
			r.setLive(pos)
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

// setLive records where the live reader stands.
func (r *route) setLive(pos Position) {
	if pos != nil {
		p := slices.Clone(pos)
		r.live.Store(&p)
	}
}

// publishGap tells every client of a live-only route that messages were
// lost. Its ID moves them past the loss.
func (r *route) publishGap(reason, message string) {
	r.seq++
	gap := esource.Gap{Reason: reason, Message: message}.Event(r.codec.live(r.epoch, r.seq))
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

// expired tells every client of a route with history that messages were
// lost to all, and returns where the live reader goes on. The gap has no
// ID: the next message's ID moves clients past the loss.
func (r *route) expired(exp *ExpiredError) Start {
	r.logger.Warn("messages expired before they were read", "route", r.path, "err", exp)
	gap := esource.Gap{Reason: "expired", Message: "the broker no longer holds these messages"}
	if err := r.es.Publish(gap.Event("")); err != nil && !errors.Is(err, esource.ErrClosed) {
		r.logger.Error("gap cannot be sent", "route", r.path, "err", err)
	}
	start := startAt(exp.Resume)
	start.Live = true
	return start
}

// startAt returns the start at pos, or at the earliest message for nil.
func startAt(pos Position) Start {
	if pos == nil {
		return Start{Earliest: true}
	}
	return Start{Position: pos}
}

// advance returns pos moved past m.
func advance(pos Position, m *Message) Position {
	for len(pos) <= m.Partition {
		pos = append(pos, 0)
	}
	pos[m.Partition] = m.Offset + 1
	return pos
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
