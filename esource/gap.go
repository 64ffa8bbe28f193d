package esource

// Gap is the data of a gap event: it tells a client that events it should
// have received are lost to it, and why. The stream goes on after it.
type Gap struct {
	// Reason says why: "unknown-id" (the log does not hold the client's
	// Last-Event-ID and there is no history), "slow" (the client fell
	// behind the log), "history" or "history: ERROR" (the History hook
	// could not serve it), or a reason set by the History hook.
	Reason string `json:"reason"`
	// LastEventID is the client's position before the gap.
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
