package esource

import "net/http"

// A Start is where a client's stream begins, decided once, when the client
// connects: after the event it last received, after a gap event, or with
// the next event published (the zero Start).
//
// A handler that knows more than the request's Last-Event-ID (a start at a
// time, say, or a start it refuses) makes its own Start and passes it to
// [EventSource.Serve]; [EventSource.StartOf] makes the usual one.
type Start struct {
	// LastEventID is the ID of the last event the client received: it
	// continues right after that event. Empty for a client that starts
	// with the next event published.
	LastEventID string

	// Position is LastEventID decoded by the EventSource's Ordering (see
	// [Ordering.Decode]), or nil: then the log looks the ID up as it is.
	// The engine compares it with the log's positions and hands it to the
	// History; it never decodes the ID again.
	Position Position

	// Gap, when set, is sent to the client first, with the ID of the
	// newest event in the log (where the stream goes on), and the client
	// starts with the next event published: for a start the server will
	// not serve, such as an ID it cannot read. LastEventID and Position
	// are then not read.
	Gap *Gap
}

// resumes reports whether the client continues after an event it had.
func (s Start) resumes() bool {
	return s.Gap == nil && (s.LastEventID != "" || s.Position != nil)
}

// StartOf returns the start that r asks for: after the event named by its
// Last-Event-ID header or, on a first request, by its lastEventId query
// parameter (the header wins), decoded by the Ordering if there is one;
// else the zero Start.
func (es *EventSource) StartOf(r *http.Request) Start {
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = r.URL.Query().Get("lastEventId")
	}
	return es.StartAfter(id)
}

// StartAfter returns the start of a client that last received the event
// id, decoded by the Ordering if there is one; the zero Start for "".
func (es *EventSource) StartAfter(id string) Start {
	return Start{LastEventID: id, Position: es.position(id)}
}
