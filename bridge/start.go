package bridge

import (
	"errors"
	"math"
	"net/http"
	"net/url"

	"github.com/esbridge/esbridge/esource"
)

// The door: a request's start is decided here, once, when the client
// connects. It comes from Last-Event-ID (or the lastEventId query
// parameter), from since=, or from the route's start=earliest, and is
// either a decoded position, checked against the stream's shape, or a gap
// with its reason. The EventSource takes it as it is (esource.Serve), and
// hands the decoded position to the route's History (Replay): nothing
// downstream decodes a client's ID again.

// Gaps of IDs the route will not resume from.
var (
	gapLongID      = esource.Gap{Reason: "malformed-id", Message: "the event ID is longer than any this stream issues"}
	gapMalformedID = esource.Gap{Reason: "malformed-id", Message: "the event ID cannot be read"}
	gapShape       = esource.Gap{Reason: "malformed-id", Message: "the event ID is not a position this stream can have"}
	gapOtherStream = esource.Gap{Reason: "other-stream", Message: "the event ID is of another stream"}
	gapLiveOnly    = esource.Gap{Reason: "no-history", Message: "the event ID is of a live-only stream"}
)

// startOf returns where req's stream begins. It returns an error, to be
// answered with 400, for a since parameter that is not a time, and
// errClientGone if the client went away while a time was looked up.
func (r *route) startOf(req *http.Request, q url.Values) (esource.Start, error) {
	id := req.Header.Get("Last-Event-ID")
	if id == "" {
		id = q.Get("lastEventId")
	}
	switch {
	case id != "":
		return r.startAfter(id), nil
	case q.Get("since") != "" && req.Method == http.MethodGet:
		return r.startSince(req, q.Get("since"))
	case r.opts.Earliest:
		return r.startEarliest(), nil
	}
	return esource.Start{}, nil
}

// errClientGone tells that the client went away before its start was
// known.
var errClientGone = errors.New("bridge: the client went away")

// startAfter returns the start of a client that last received the event
// id: its decoded position, or a gap saying why there is none. An empty
// id starts with the next message.
func (r *route) startAfter(id string) esource.Start {
	if id == "" || !r.info.History {
		// Live IDs are looked up in the log as they are.
		return esource.Start{LastEventID: id}
	}
	t, gap := r.decodeStart(id)
	if gap != nil {
		gap.LastEventID = esource.Truncate(id)
		return esource.Start{Gap: gap}
	}
	return esource.Start{LastEventID: id, Position: t}
}

// startAt returns the start of a client at t, a position of the route's
// own making.
func (r *route) startAt(t *eventID) esource.Start {
	c := r.codec()
	c.inc = t.inc
	id := c.origin()
	if t.kind != kindOrigin {
		id = c.position(t.pos)
	}
	return esource.Start{LastEventID: id, Position: t}
}

// startEarliest returns the start of a client of a start=earliest route
// without an ID: the route's origin.
func (r *route) startEarliest() esource.Start {
	return r.startAt(&eventID{kind: kindOrigin, inc: r.codec().inc, pos: Position{}})
}

// decodeStart decodes a client's ID into the position it resumes from, or
// returns the gap that tells it why it cannot: an ID too long, unreadable,
// of another stream or of a live-only one, or one that names a position
// the stream cannot have (see checkShape). An ID of an earlier
// incarnation of the stream decodes: Replay tells the client of the reset.
func (r *route) decodeStart(id string) (*eventID, *esource.Gap) {
	if len(id) > maxIDLength {
		return nil, gap(gapLongID)
	}
	t, err := r.codec().decode(id)
	switch {
	case errors.Is(err, errOtherStream):
		return nil, gap(gapOtherStream)
	case err != nil:
		return nil, gap(gapMalformedID)
	case t.kind == kindLive:
		return nil, gap(gapLiveOnly)
	case t.kind == kindOrigin:
		t.pos = Position{}
	case !r.checkShape(t.pos):
		return nil, gap(gapShape)
	}
	return &t, nil
}

// checkShape reports whether pos is a position the stream can have: as
// many partitions as the stream has, where that is fixed, and offsets
// from Info.FirstOffset to the largest a broker issues. A position that
// fails it could never be opened, and must not start a catch-up reader.
func (r *route) checkShape(pos Position) bool {
	n := r.info.Partitions
	if len(pos) == 0 || n > 0 && len(pos) != n {
		return false
	}
	for _, off := range pos {
		if off < r.info.FirstOffset || off > math.MaxInt64 {
			return false
		}
	}
	return true
}

// gap returns a copy of g, for a client's own LastEventID.
func gap(g esource.Gap) *esource.Gap { return &g }
