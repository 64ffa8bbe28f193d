package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/esbridge/esbridge/esource"
)

// StreamsPath is the path of merged streams: GET
// /_streams?route=/orders&route=/payments streams the routes /orders and
// /payments on one response. Each event's type is its route's path (for
// an event that has no type of its own, which fires onmessage on the
// route's own path) or PATH:TYPE (for a typed one, gap events included),
// so that a page listens with addEventListener("/orders", …). Its ID
// carries every route's own ID (see MaxStreamsIDLength), so that a
// browser resumes each route exactly where it was. A route may have a
// filter, as a query in its value (see ParseStreams); the ID moves past
// the events it skips too.
const StreamsPath = "/_streams"

// MaxStreamsRoutes is the most routes a merged stream may have.
const MaxStreamsRoutes = 16

// maxStreamsQuery bounds the query of a merged stream's request, in bytes.
const maxStreamsQuery = 8 << 10

// Reserved reports whether path is one that esbridge keeps for itself, so
// that no route may take it: /healthz, /readyz, and every path that
// begins with /_ (StreamsPath among them).
func Reserved(path string) bool {
	return path == "/healthz" || path == "/readyz" || strings.HasPrefix(path, "/_")
}

// ErrBadStreams is returned by ParseStreams for a request it refuses.
var ErrBadStreams = errors.New("bridge: bad merged stream")

// A StreamsRoute is a route of a merged stream, as the stream's query
// names it.
type StreamsRoute struct {
	// Path is the route's path.
	Path string
	// Filter holds the route's filter parameters (subject, key, type), as
	// a request for the route alone would give them; nil for none.
	Filter url.Values
}

// ParseStreams returns the routes that a merged stream's query names (the
// values of route, in order), without checking that they are routes nor
// that they can serve their filters. Each value is a path, optionally
// followed by a query of filter parameters, URL-encoded within the value
// (route=%2Forders%3Ftype%3Dcreated for /orders?type=created). It returns
// ErrBadStreams, wrapped with a short reason, for a query too long or
// malformed, with no route, more than MaxStreamsRoutes, a route twice
// (whatever its filters), a parameter it does not know, or a route option
// other than subject, key and type.
func ParseStreams(rawQuery string) ([]StreamsRoute, error) {
	if len(rawQuery) > maxStreamsQuery {
		return nil, fmt.Errorf("%w: query longer than %d bytes", ErrBadStreams, maxStreamsQuery)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed query", ErrBadStreams)
	}
	for k := range q {
		switch k {
		case "route", "lastEventId", "access_token":
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q", ErrBadStreams, esource.Truncate(k))
		}
	}
	values := q["route"]
	switch {
	case len(values) == 0:
		return nil, fmt.Errorf("%w: no route (want ?route=/a&route=/b)", ErrBadStreams)
	case len(values) > MaxStreamsRoutes:
		return nil, fmt.Errorf("%w: more than %d routes", ErrBadStreams, MaxStreamsRoutes)
	}
	routes := make([]StreamsRoute, len(values))
	for i, v := range values {
		p, opts, hasOpts := strings.Cut(v, "?")
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("%w: route %q does not begin with /", ErrBadStreams, esource.Truncate(p))
		}
		for _, o := range routes[:i] {
			if o.Path == p {
				return nil, fmt.Errorf("%w: route %q twice", ErrBadStreams, esource.Truncate(p))
			}
		}
		routes[i].Path = p
		if !hasOpts || opts == "" {
			continue
		}
		f, err := url.ParseQuery(opts)
		if err != nil {
			return nil, fmt.Errorf("%w: route %q: malformed options", ErrBadStreams, esource.Truncate(p))
		}
		for k := range f {
			switch k {
			case "subject", "key", "type":
			default:
				return nil, fmt.Errorf("%w: route %q: unknown option %q (want subject, key or type)", ErrBadStreams, esource.Truncate(p), esource.Truncate(k))
			}
		}
		routes[i].Filter = f
	}
	return routes, nil
}

// A merged is one route of a merged stream.
type merged struct {
	r      *route
	tag    [4]byte
	filter esource.Filter // nil for none
}

// streamItem is an event of a route, on its way to the stream's writer;
// an item with ended set tells that the route's iteration ended.
type streamItem struct {
	m     int // index in the stream's routes
	ev    esource.Event
	ended bool
}

// serveStreams serves a merged stream: one client of each route's
// EventSource (esource.EventSource.Tee, which catches a slow one up from
// the broker, or sends it a gap, and never holds the publisher back),
// whose events one writer, the handler, writes as they come.
//
// Tee decodes each event from its wire bytes, and the writer encodes it
// again with its merged ID and type: per event and stream, a few
// allocations and copies of the event's bytes and of the merged ID.
func (b *Bridge) serveStreams(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "esbridge: an event stream takes GET", http.StatusMethodNotAllowed)
		return
	}
	named, err := ParseStreams(req.URL.RawQuery)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	routes := make([]merged, len(named))
	tags := make([][4]byte, len(named))
	paths := make([]string, len(named))
	for i, n := range named {
		p := n.Path
		r := b.routes[p]
		if r == nil {
			http.Error(w, "esbridge: no route "+strconv.Quote(esource.Truncate(p)), http.StatusBadRequest)
			return
		}
		f, err := r.filter(n.Filter)
		if err != nil {
			http.Error(w, "esbridge: route "+strconv.Quote(esource.Truncate(p))+": "+err.Error(), http.StatusBadRequest)
			return
		}
		routes[i] = merged{r: r, tag: b.tags[p], filter: f}
		tags[i], paths[i] = routes[i].tag, p
	}
	for _, a := range paths {
		for _, c := range paths {
			if strings.HasPrefix(c, a+":") {
				// An event type a:x would be ambiguous.
				http.Error(w, "esbridge: routes "+strconv.Quote(esource.Truncate(a))+" and "+strconv.Quote(esource.Truncate(c))+" cannot be merged", http.StatusBadRequest)
				return
			}
		}
	}

	lastID := req.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = req.URL.Query().Get("lastEventId")
	}
	ids := newStreamsID(tags)
	var gaps []esource.Event
	if lastID != "" && ids.decode(lastID) != nil {
		// Every route starts again, as a new client would, after a gap.
		for _, m := range routes {
			g := esource.Gap{Reason: "malformed-id", Message: "the merged event ID cannot be read", LastEventID: esource.Truncate(lastID)}
			gaps = append(gaps, esource.Event{Type: m.r.path + ":" + esource.GapType, Data: g})
		}
	}
	// Each route resumes after its part of the ID; a route without one
	// starts at its origin (start=earliest) or after the newest event it
	// holds: known now, before the response begins, so that the stream
	// has every event published after it opened.
	starts := make([]string, len(routes))
	for i, m := range routes {
		switch id := ids.get(m.tag); {
		case id != "":
			starts[i] = id
		case m.r.opts.Earliest:
			starts[i] = m.r.codec().origin()
		default:
			starts[i] = m.r.es.LastID()
		}
		if starts[i] != "" && ids.get(m.tag) == "" && !ids.set(m.tag, starts[i]) {
			starts[i] = "" // not an ID of the bridge's: live
		}
	}

	h := w.Header()
	h.Set("Content-Type", esource.ContentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodHead {
		return
	}
	sw := &streamWriter{w: w, rc: http.NewResponseController(w)}
	var first bytes.Buffer
	fmt.Fprintf(&first, "retry: %d\n\n", esource.DefaultRetry.Milliseconds())
	for _, g := range gaps {
		_, _ = g.WriteTo(&first)
	}
	if id, ok := ids.encode(); ok && id != "" {
		ev := esource.Event{ID: id}
		_, _ = ev.WriteTo(&first) // an ID only: the browser's resume point
	}
	if sw.write(first.Bytes()) != nil {
		return
	}

	ctx, cancel := context.WithCancel(req.Context())
	items := make(chan streamItem, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i, m := range routes {
		seq, err := m.r.es.TeeFrom(ctx, m.r.startAfter(starts[i]), m.filter)
		if err != nil { // shut down
			items <- streamItem{m: i, ended: true}
			continue
		}
		wg.Go(func() {
			for ev := range seq {
				select {
				case items <- streamItem{m: i, ev: ev}:
				case <-ctx.Done():
					return
				}
			}
			select {
			case items <- streamItem{m: i, ended: true}:
			case <-ctx.Done():
			}
		})
	}
	b.writeStreams(ctx, sw, routes, ids, items)
}

// writeStreams writes the routes' events as they come, until ctx ends,
// the client fails, or every route has ended (the bridge shuts down:
// then a short retry line ends the stream).
//
// An event with an ID alone (a route's progress past events its filter
// skips, or an ID-only event of its own) is not written as it comes: it
// moves the route's part of the merged ID, which the next event carries,
// or else a frame with the ID alone, at most once per progress interval.
func (b *Bridge) writeStreams(ctx context.Context, sw *streamWriter, routes []merged, ids *streamsID, items <-chan streamItem) {
	heartbeat := time.NewTimer(b.heartbeat)
	defer heartbeat.Stop()
	progressTimer := time.NewTimer(time.Hour)
	progressTimer.Stop()
	defer progressTimer.Stop()
	var progress <-chan time.Time // fires when a pending ID frame is due
	pending := false              // the browser's ID is behind ids
	told := time.Now()            // when the browser was last sent an ID
	ended := 0
	warned := false
	var buf bytes.Buffer
	for {
		buf.Reset()
		select {
		case it := <-items:
		batch:
			for {
				switch ev := &it.ev; {
				case it.ended:
					ended++
				case ev.Data == nil && ev.Type == "":
					if ev.ID != "" && !ids.set(routes[it.m].tag, ev.ID) {
						b.logger.Error("merged stream: a route's event ID is not base64url", "route", routes[it.m].r.path, "id", esource.Truncate(ev.ID))
						return
					}
					pending = pending || ev.ID != ""
				default:
					if !b.appendStreamEvent(&buf, routes[it.m], ids, ev, &warned) {
						return
					}
					if ev.ID != "" {
						pending, told = false, time.Now()
					}
				}
				if ended == len(routes) || buf.Len() >= 64<<10 {
					break
				}
				select {
				case it = <-items:
				default:
					break batch
				}
			}
		case <-heartbeat.C:
			buf.WriteString(":\n\n")
		case <-progress:
			progress = nil
		case <-ctx.Done():
			return
		}
		if pending && progress == nil {
			if wait := b.progress - time.Since(told); wait > 0 {
				progressTimer.Reset(wait)
				progress = progressTimer.C
			} else if id, ok := ids.encode(); ok && id != "" {
				ev := esource.Event{ID: id}
				_, _ = ev.WriteTo(&buf)
				pending, told = false, time.Now()
			}
		}
		if ended == len(routes) {
			d := esource.DefaultDrainRetry/2 + rand.N(esource.DefaultDrainRetry)
			fmt.Fprintf(&buf, "retry: %d\n\n", d.Milliseconds())
		}
		if buf.Len() > 0 {
			if sw.write(buf.Bytes()) != nil {
				return
			}
			heartbeat.Reset(b.heartbeat)
		}
		if ended == len(routes) {
			return
		}
	}
}

// appendStreamEvent appends ev, an event of route m, to buf with its
// merged ID and type. It reports false for an event it cannot encode,
// which the route never publishes.
func (b *Bridge) appendStreamEvent(buf *bytes.Buffer, m merged, ids *streamsID, ev *esource.Event, warned *bool) bool {
	out := esource.Event{Data: ev.Data}
	if ev.Data != nil || ev.Type != "" {
		out.Type = m.r.path
		if ev.Type != "" {
			out.Type += ":" + ev.Type
		}
	}
	if ev.ID != "" {
		if !ids.set(m.tag, ev.ID) {
			b.logger.Error("merged stream: a route's event ID is not base64url", "route", m.r.path, "id", esource.Truncate(ev.ID))
			return false
		}
		id, ok := ids.encode()
		if !ok && !*warned {
			*warned = true
			b.logger.Warn("merged stream: the event ID would pass its bound; events go without one", "route", m.r.path, "bound", MaxStreamsIDLength)
		}
		out.ID = id
	}
	if out.ID == "" && out.Data == nil && out.Type == "" {
		return true
	}
	if _, err := out.WriteTo(buf); err != nil {
		b.logger.Error("merged stream: event cannot be sent", "route", m.r.path, "err", err)
		return false
	}
	return true
}

// streamWriter writes a merged stream to its response, with a deadline on
// every write, and flushes.
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *streamWriter) write(b []byte) error {
	// Not every ResponseWriter supports deadlines; streaming works without.
	_ = s.rc.SetWriteDeadline(time.Now().Add(esource.DefaultWriteTimeout))
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}
