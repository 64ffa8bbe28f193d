package esource

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"strings"
	"sync/atomic"
)

// Tee returns an iterator over the events as a client would receive them:
// those that follow lastID (from the log, the History hook, or after a gap
// event, as for ServeHTTP), or with lastID empty the events published from
// now on. Data arrives as a string, or nil for an event without data.
//
// The iteration ends when ctx ends, when the loop body breaks, or when the
// EventSource shuts down (after the events published before it). Tee
// returns ErrClosed after shutdown. Like an HTTP client, an iteration that
// falls behind the log is caught up through History, or sent a gap event:
// it never holds the publisher back.
func (es *EventSource) Tee(ctx context.Context, lastID string) (iter.Seq[Event], error) {
	return es.TeeFrom(ctx, es.StartAfter(lastID), nil)
}

// TeeFrom is Tee from start, with only the events that f lets through
// (see Filter), as Serve sends them: f is registered with the
// EventSource's filters, and the events it skips are told, at most once
// per progress interval, by an event with only the ID of the last one
// skipped (no data, no type). A nil f lets every event through.
func (es *EventSource) TeeFrom(ctx context.Context, start Start, f Filter) (iter.Seq[Event], error) {
	es.mu.RLock()
	closed := es.closed
	es.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	return func(yield func(Event) bool) {
		c := &client{es: es, sink: &teeSink{yield: yield}, filter: f}
		_ = c.run(ctx, start)
	}, nil
}

var errStopped = errors.New("esource: iteration stopped")

// teeSink decodes the wire bytes back into events for an iterator.
type teeSink struct {
	yield   func(Event) bool
	aborted atomic.Bool
	dec     wireDecoder
}

func (s *teeSink) write(bufs [][]byte) error {
	for _, b := range bufs {
		if s.aborted.Load() || !s.dec.decode(b, s.yield) {
			return errStopped
		}
	}
	return nil
}

func (s *teeSink) abort() { s.aborted.Store(true) }

// A wireDecoder decodes events as appendWire writes them (and comment and
// retry lines, which it skips), from buffers of whole lines: an event may
// span several, as one sent with a client's own ID does (see handoff.go).
type wireDecoder struct {
	ev            Event
	data          strings.Builder
	hasData, seen bool
}

// decode yields the events that end in b. It reports false if yield did.
func (d *wireDecoder) decode(b []byte, yield func(Event) bool) bool {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) == 0 {
			if d.seen {
				if d.hasData {
					d.ev.Data = d.data.String()
				}
				if !yield(d.ev) {
					return false
				}
			}
			d.ev, d.hasData, d.seen = Event{}, false, false
			d.data.Reset()
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "id":
			d.ev.ID, d.seen = string(value), true
		case "event":
			d.ev.Type, d.seen = string(value), true
		case "data":
			if d.hasData {
				d.data.WriteByte('\n')
			}
			d.data.Write(value)
			d.hasData, d.seen = true, true
		}
	}
	return true
}
