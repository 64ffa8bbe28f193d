package bridge

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

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

// serveStreams serves a merged stream: a part for each route, served by
// esource.ServeMerged, which catches a slow part up from the broker, or
// sends it a gap, and never holds a route's publisher back.
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
	routes := make([]*route, len(named))
	parts := make([]esource.Part, len(named))
	tags := make([][4]byte, len(named))
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
		routes[i], tags[i] = r, b.tags[p]
		parts[i] = esource.Part{Source: r.es, Filter: f, Name: p}
	}
	for _, a := range named {
		for _, c := range named {
			if strings.HasPrefix(c.Path, a.Path+":") {
				// An event type a:x would be ambiguous.
				http.Error(w, "esbridge: routes "+strconv.Quote(esource.Truncate(a.Path))+" and "+strconv.Quote(esource.Truncate(c.Path))+" cannot be merged", http.StatusBadRequest)
				return
			}
		}
	}

	lastID := req.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = req.URL.Query().Get("lastEventId")
	}
	ids := newStreamsID(tags)
	malformed := lastID != "" && ids.decode(lastID) != nil
	// Each route resumes after its part of the ID; a route without one
	// starts at its origin (start=earliest), or as a new client of the
	// route does.
	for i, r := range routes {
		switch id := ids.get(tags[i]); {
		case malformed:
			// Every route starts again, as a new client would, after a gap.
			g := esource.Gap{Reason: "malformed-id", Message: "the merged event ID cannot be read", LastEventID: esource.Truncate(lastID)}
			parts[i].Start = esource.Start{Gap: &g}
		case id != "":
			parts[i].Start = r.startAfter(id)
		case r.opts.Earliest:
			parts[i].Start = r.startEarliest()
		}
		if parts[i].Start.Gap != nil {
			ids.drop(tags[i]) // the gap tells where the route goes on
		}
	}
	esource.ServeMerged(w, req, ids, parts...)
}
