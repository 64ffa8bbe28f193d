package bridge

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
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
	sinces   *sinceCache              // recent look-ups of since times
	live     atomic.Pointer[Position] // where the live reader stands, for Replay
	path     string
	src      Source
	info     Info
	opts     Options
	codecs   atomic.Pointer[codec] // of the stream's current incarnation
	tr       translator
	es       *esource.EventSource
	epoch    uint64 // instance epoch, for sources without history
	seq      uint64 // live sequence, for sources without history
	ready    atomic.Bool
	staller  atomic.Pointer[Staller] // the live reader, if it is one
	lagCache lagCache
	reads    readTimes
	logger   *slog.Logger

	snap *snapTable // with Options.Snapshot
	// snapAtFirst: the snapshot table is to be read up to the live
	// reader's first message. Of the live reader's goroutine.
	snapAtFirst bool
}

// codec returns the codec of the stream's current incarnation, as far as
// the live reader knows it.
func (r *route) codec() codec { return *r.codecs.Load() }

// run reads the source live and publishes every message, reopening the
// reader where it left off after an error, until ctx ends. When the stream
// was deleted or created again, it waits for the stream, tells every
// client with a gap, and reads the new stream from its first message.
func (r *route) run(ctx context.Context) {
	start := Start{Live: true} // the first reader starts with the next message
	opened := false
	reset := false            // the stream was deleted or created again: start the new one
	var inc uint64            // the incarnation the live reader read, 0 until known
	var last Position         // where the live reader stood
	var retry backoff.Backoff // 100 ms up to 5 s
	rebuild := r.snap != nil  // the snapshot table must be read from the broker
	if r.snap != nil {
		defer r.snap.close()
	}
	for ctx.Err() == nil {
		rd, err := r.src.Open(ctx, start)
		var exp *ExpiredError
		switch {
		case errors.As(err, &exp):
			// Retention deleted messages the live reader had not read:
			// every client lost them.
			start = r.expired(exp)
			rebuild = r.snap != nil
			continue
		case errors.Is(err, ErrAhead) && opened && inc == 0:
			// The stream's head is behind where the live reader stood:
			// it was created again, on a broker that does not say so.
			// (Where the broker tells incarnations, the same one behind
			// is a broker that lost messages: the reader retries.)
			r.logger.Warn("the stream is behind the live reader: created again", "route", r.path, "stream", r.info.Stream)
			reset, start = true, Start{Earliest: true, Live: true}
			continue
		case err != nil:
			r.ready.Store(false)
			if ctx.Err() == nil {
				r.logger.Warn("source unavailable; retrying", "route", r.path, "stream", r.info.Stream, "err", err)
			}
			retry.Wait(ctx)
			continue
		}
		now := incarnationOf(rd)
		if reset && inc != 0 && now == inc {
			// The stream is back as it was (it was missing for a while,
			// or its source was unsure): go on where the reader stood.
			rd.Close()
			r.logger.Info("the stream is back, the same", "route", r.path, "stream", r.info.Stream)
			reset, start = false, Start{Position: last, Live: true}
			continue
		}
		if inc != 0 && now != 0 && now != inc && !reset {
			rd.Close()
			r.logger.Warn("the stream was created again", "route", r.path, "stream", r.info.Stream)
			reset, start = true, Start{Earliest: true, Live: true}
			continue
		}
		switch {
		case reset:
			r.publishReset(now)
		case now != inc:
			c := r.codec().incarnation(now)
			r.codecs.Store(&c)
		}
		switch {
		case opened && !r.info.History:
			// A source without history lost what came while it was away.
			r.publishGap("source-reconnected", "the source reconnected and lost what came meanwhile")
		case !opened && r.info.History:
			r.publishStart(rd.Position())
		}
		r.setLive(rd.Position())
		if rebuild || reset && r.snap != nil {
			id := r.codec().position(rd.Position())
			if reset {
				id = r.codec().origin()
			}
			// A reader that cannot tell its position before its first
			// message (a RabbitMQ stream read from its head) has the
			// table read up to that message.
			r.snapAtFirst = rd.Position() == nil
			if !r.snapAtFirst {
				r.snap.rebuild(ctx, rd.Position(), id)
			}
			rebuild = false
		}
		opened, reset, inc = true, false, now
		if st, ok := rd.(Staller); ok {
			r.staller.Store(&st)
		}
		r.ready.Store(true)
		retry.Reset()
		pos, err := r.follow(ctx, rd)
		last = pos
		r.staller.Store(nil)
		rd.Close()
		if ctx.Err() != nil {
			return
		}
		if errors.As(err, &exp) {
			// The broker deleted what the live reader was about to read
			// (a source that finds out only when reading): as above.
			start = r.expired(exp)
			rebuild = r.snap != nil
			continue
		}
		r.ready.Store(false)
		switch {
		case errors.Is(err, ErrReset):
			r.logger.Warn("the stream was deleted; waiting for it", "route", r.path, "stream", r.info.Stream, "err", err)
			reset, start = true, Start{Earliest: true, Live: true}
		default:
			r.logger.Warn("source reader failed; reopening", "route", r.path, "stream", r.info.Stream, "err", err)
			start = Start{Position: pos, Live: true} // nil for a source without history: latest
		}
		retry.Wait(ctx)
	}
}

// incarnationOf returns the incarnation of rd's stream, 0 if it tells none.
func incarnationOf(rd Reader) uint64 {
	if i, ok := rd.(Incarnated); ok {
		return i.Incarnation()
	}
	return 0
}

// publishReset moves the route to the stream's incarnation inc and tells
// every client that the stream was deleted or created again. The gap's ID
// is the new stream's origin: a client that resumes from it reads the new
// stream from its first message.
func (r *route) publishReset(inc uint64) {
	c := r.codec().incarnation(inc)
	r.codecs.Store(&c)
	if err := r.es.Publish(resetGap(c)); err != nil && !errors.Is(err, esource.ErrClosed) {
		r.logger.Error("gap cannot be sent", "route", r.path, "err", err)
	}
}

// resetGap returns the gap event that tells a client the stream was
// deleted or created again, with the ID of the start of c's incarnation.
func resetGap(c codec) esource.Event {
	return esource.Gap{Reason: "stream-reset", Message: "the stream was deleted or created again; the new one follows from its start"}.Event(c.origin())
}

// follow publishes rd's messages until it fails, and returns the position
// after the last message published.
func (r *route) follow(ctx context.Context, rd Reader) (Position, error) {
	pos := slices.Clone(rd.Position())
	ids := idEncoder{c: r.codec()}
	var s slab // labels and positions as a catch-up reader's; IDs of their own (see slab)
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
			r.live.Store(s.positionRef(pos))
		} else {
			r.seq++
			id = r.codec().live(r.epoch, r.seq)
		}
		ev := r.tr.event(id, &m, &s)
		if err := r.es.Publish(ev); err != nil {
			if errors.Is(err, esource.ErrClosed) {
				return pos, err
			}
			r.logger.Error("message cannot be sent", "route", r.path, "id", id, "err", err)
		} else if r.snapAtFirst {
			r.snapAtFirst = false
			r.snap.rebuild(ctx, pos, id) // m included
		} else if r.snap != nil {
			r.snap.apply(&m, ev) // after the log has it: a snapshot's clients join the log there
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
	gap := esource.Gap{Reason: reason, Message: message}.Event(r.codec().live(r.epoch, r.seq))
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
	if err := r.es.Publish(esource.Event{ID: r.codec().position(pos)}); err != nil && !errors.Is(err, esource.ErrClosed) {
		r.logger.Error("start position cannot be published", "route", r.path, "err", err)
	}
}

// isReady reports whether the route's live reader is open, its source
// connected, and most of its partitions read.
func (r *route) isReady() bool {
	if c, ok := r.src.(Connectivity); ok && !c.Connected() {
		return false
	}
	return r.ready.Load() && !r.mostlyStalled(r.stalls())
}

// stalls returns the partitions the live reader cannot read for now.
func (r *route) stalls() []Stall {
	if st := r.staller.Load(); st != nil {
		return (*st).Stalled()
	}
	return nil
}

// mostlyStalled reports whether half the live reader's partitions or more
// are stalled: a route serves while most of them are read, so that one
// partition whose leader is moving does not take an instance out of its
// load balancer.
func (r *route) mostlyStalled(stalls []Stall) bool {
	if len(stalls) == 0 {
		return false
	}
	n := 1
	if pos := r.live.Load(); pos != nil {
		n = max(len(*pos), 1)
	}
	return 2*len(stalls) >= n
}

// expired tells every client of a route with history that messages were
// lost to all, and returns where the live reader goes on. The gap's ID is
// that position, so that a client already past it (one caught up from the
// broker meanwhile) skips it, as it skips the events it has received.
func (r *route) expired(exp *ExpiredError) Start {
	r.logger.Warn("messages expired before they were read", "route", r.path, "err", exp)
	if err := r.es.Publish(expiredGap(r.codec(), exp, exp.Missed, "")); err != nil && !errors.Is(err, esource.ErrClosed) {
		r.logger.Error("gap cannot be sent", "route", r.path, "err", err)
	}
	start := startAt(exp.Resume)
	start.Live = true
	return start
}

// expiredGap returns the gap event that tells a client at lastID (empty
// for the clients of the log) that it missed messages that exp lost, with
// the ID of where the stream goes on, if the source said.
func expiredGap(c codec, exp *ExpiredError, missed uint64, lastID string) esource.Event {
	gap := esource.Gap{Reason: "expired", Message: "the broker no longer holds these messages", LastEventID: lastID, Missed: missed}
	id := ""
	if exp.Resume != nil {
		id = c.position(exp.Resume)
	}
	return gap.Event(id)
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

// filter returns the filter a client asks for in q on this route (see
// parseFilter), nil for none, or why the route cannot serve it.
func (r *route) filter(q url.Values) (esource.Filter, error) {
	var subjects []string
	if s, ok := r.src.(Subjected); ok && q.Has("subject") {
		subjects = s.StreamSubjects()
	}
	return parseFilter(q, r.info, subjects)
}

// ServeHTTP serves the route's event stream, with the events of the
// client's filter only, if it asks for one (see filter.go); a filter the
// route cannot serve gets 400 and the reason. The stream begins where
// startOf says: after the client's event ID, at the time of its since
// parameter, at the beginning of the stream on a route with
// Options.Earliest, or with the next message.
func (r *route) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	f, err := r.filter(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	view, err := r.viewOf(q, f)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var start esource.Start
	if view == "snapshot" && req.Header.Get("Last-Event-ID") == "" && q.Get("lastEventId") == "" {
		start = snapshotStart()
	} else {
		start, err = r.startOf(req, q)
	}
	switch {
	case errors.Is(err, errClientGone):
		return
	case err != nil:
		http.Error(w, "esbridge: "+err.Error(), http.StatusBadRequest)
		return
	}
	if t, ok := start.Position.(*eventID); ok && view == "snapshot" {
		t.heal = true // decoded for this client alone
	}
	r.es.Serve(w, req, start, f)
}
