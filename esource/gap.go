package esource

import "unicode/utf8"

// Gap is the data of a gap event: it tells a client that events it should
// have received are lost to it, and why. The stream goes on after it.
type Gap struct {
	// Reason says why, in a stable code: "unknown-id" (the log does not
	// hold the client's Last-Event-ID and there is no history), "slow"
	// (the client fell behind the log), "history" (the History hook could
	// not serve it), or a code of the History's (see [GapError]).
	Reason string `json:"reason"`
	// Message says why for people, in a short text.
	Message string `json:"message,omitempty"`
	// LastEventID is the client's position before the gap, cut to at most
	// MaxEchoedID bytes (see [Truncate]).
	LastEventID string `json:"lastEventId"`
	// Missed is how many events were lost, when known.
	Missed uint64 `json:"missed,omitempty"`
}

// GapType is the event type of gap events.
const GapType = "gap"

// Event returns the gap event with the given ID: the position from which
// the stream goes on.
func (g Gap) Event(id string) Event {
	return Event{ID: id, Type: GapType, Data: g}
}

// MaxEchoedID is how much of a client's Last-Event-ID a gap event or a
// log line repeats: a client's input is never echoed whole.
const MaxEchoedID = 128

// Truncate returns id cut to at most MaxEchoedID bytes, with "…" in place
// of the rest.
func Truncate(id string) string {
	if len(id) <= MaxEchoedID {
		return id
	}
	n := MaxEchoedID
	for n > 0 && !utf8.RuneStart(id[n]) {
		n--
	}
	return id[:n] + "…"
}
