package bridge

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/esbridge/esbridge/esource"
)

// Start from a time: a client without an event ID may ask, with the query
// parameter since=TIME, for the stream from the first message stored at or
// after TIME. The route looks the time up on its source (a [Seeker]) once,
// then serves the client as one resuming from that position: from the
// log, or riding the catch-up readers, which it shares with every other
// client at the same position. A crowd with the same since costs one
// look-up, and one reader.

// Bounds of since.
const (
	// maxSinceLength bounds the since parameter: an RFC 3339 time with
	// nanoseconds and a zone offset is 35 bytes.
	maxSinceLength = 40
	// maxSinceMillis is the last millisecond of the year 9999.
	maxSinceMillis = 253402300799999
	// sinceTimeout bounds a look-up on the source.
	sinceTimeout = 10 * time.Second
	// sinceTTL is how long a look-up's answer serves other clients with
	// the same since.
	sinceTTL = time.Second
	// sinceEntries bounds the answers a route keeps.
	sinceEntries = 256
	// sinceLookups bounds the look-ups a route makes at once.
	sinceLookups = 4
)

// Reasons for a since that the route will not serve, as they reach a
// client: as the body of a 400 for a malformed one, as a gap otherwise.
var (
	errSinceSyntax = errors.New("since: want an RFC 3339 time or Unix milliseconds")
	errSinceRange  = errors.New("since: want a time from 1970 to 9999")
)

// parseSince parses the since query parameter: an RFC 3339 time, or
// Unix milliseconds, from 1970 to 9999.
func parseSince(v string) (time.Time, error) {
	if v == "" || len(v) > maxSinceLength {
		return time.Time{}, errSinceSyntax
	}
	if allDigits(v) {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms > maxSinceMillis {
			return time.Time{}, errSinceRange
		}
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errSinceSyntax
	}
	if t.Before(time.Unix(0, 0)) || t.UnixMilli() > maxSinceMillis {
		return time.Time{}, errSinceRange
	}
	return t, nil
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// sinceAllowed reports whether the route's options let a client start at
// t, at now.
func (o *Options) sinceAllowed(t, now time.Time) bool {
	switch {
	case o.MaxSince < 0:
		return false
	case o.MaxSince == 0:
		return o.Earliest
	}
	return !t.Before(now.Add(-o.MaxSince))
}

// startSince returns the start of a client without an event ID that
// asked to start at the time v: an error, for a 400, if v is not a time; a
// gap, then the live stream, if the route will not go back that far, or
// cannot; the live stream for a time to come; else the position of v,
// looked up once for every client with the same since.
func (r *route) startSince(req *http.Request, v string) (esource.Start, error) {
	t, err := parseSince(v)
	if err != nil {
		return esource.Start{}, err
	}
	seeker, seeks := r.src.(Seeker)
	switch {
	case !r.info.History:
		return esource.Start{Gap: &esource.Gap{Reason: "no-history", Message: "the stream keeps no history: it starts now"}}, nil
	case !r.opts.sinceAllowed(t, time.Now()):
		return esource.Start{Gap: &esource.Gap{Reason: "since-refused", Message: "the route does not go back that far: the stream starts now"}}, nil
	case !seeks:
		return esource.Start{Gap: &esource.Gap{Reason: "since-unsupported", Message: "the source cannot start from a time: the stream starts now"}}, nil
	case t.After(time.Now()):
		return esource.Start{}, nil // what comes next is stored after now
	}
	pos, err := r.sinces.lookup(req.Context(), r.ctx, seeker, t)
	switch {
	case err != nil && req.Context().Err() != nil:
		return esource.Start{}, errClientGone
	case err != nil:
		r.logger.Warn("since cannot be looked up", "route", r.path, "err", err)
		return esource.Start{Gap: &esource.Gap{Reason: "since-failed", Message: "the time could not be looked up: the stream starts now"}}, nil
	case pos == nil:
		return esource.Start{}, nil // nothing at or after t yet
	}
	return r.startAt(&eventID{kind: kindPosition, inc: r.codec().inc, pos: pos}), nil
}

// sinceCache holds a route's recent look-ups of times, so that clients
// with the same since share one. It is safe for concurrent use.
type sinceCache struct {
	lookups chan struct{} // a token per look-up under way

	mu      sync.Mutex
	entries map[int64]*sinceEntry // by Unix nanoseconds
}

// A sinceEntry is a look-up, under way until done is closed.
type sinceEntry struct {
	done chan struct{}
	pos  Position
	err  error
	gone bool      // the client that made it went away first: no answer
	at   time.Time // when it was done; guarded by sinceCache.mu
}

func newSinceCache() *sinceCache {
	return &sinceCache{lookups: make(chan struct{}, sinceLookups), entries: make(map[int64]*sinceEntry)}
}

// lookup returns src's position at t: a recent answer for t, an answer
// under way, or a look-up of its own. ctx bounds the wait; life bounds the
// look-up, which goes on for the others if the client that made it goes
// away.
func (c *sinceCache) lookup(ctx, life context.Context, src Seeker, t time.Time) (Position, error) {
	key := t.UnixNano()
	for {
		c.mu.Lock()
		e := c.entries[key]
		if e != nil && !e.at.IsZero() && time.Since(e.at) >= sinceTTL {
			delete(c.entries, key)
			e = nil
		}
		if e == nil {
			return c.lookupOwn(ctx, life, src, t, key) // unlocks c.mu
		}
		c.mu.Unlock()
		select {
		case <-e.done:
			if !e.gone {
				return e.pos, e.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// lookupOwn looks t up for a client, and for those that come meanwhile.
// c.mu must be held; lookupOwn unlocks it.
func (c *sinceCache) lookupOwn(ctx, life context.Context, src Seeker, t time.Time, key int64) (Position, error) {
	now := time.Now()
	e := &sinceEntry{done: make(chan struct{})}
	if len(c.entries) >= sinceEntries {
		c.prune(now)
	}
	if len(c.entries) < sinceEntries {
		c.entries[key] = e
	}
	c.mu.Unlock()

	select {
	case c.lookups <- struct{}{}:
		lctx, cancel := context.WithTimeout(life, sinceTimeout)
		e.pos, e.err = src.PositionAt(lctx, t)
		cancel()
		<-c.lookups
	case <-ctx.Done():
		e.err, e.gone = ctx.Err(), true
	}
	c.mu.Lock()
	e.at = time.Now()
	if e.gone && c.entries[key] == e {
		delete(c.entries, key) // no answer: the next client looks it up
	}
	c.mu.Unlock()
	close(e.done)
	return e.pos, e.err
}

// prune drops the answers older than sinceTTL. c.mu must be held.
func (c *sinceCache) prune(now time.Time) {
	for k, e := range c.entries {
		if !e.at.IsZero() && now.Sub(e.at) >= sinceTTL {
			delete(c.entries, k)
		}
	}
}
