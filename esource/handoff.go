package esource

// The hand-off rule, written once: a client that resumed at a position,
// with an Ordering, is sent events that a reader met in an order of its
// own. For each event, in that order:
//
//   - an event the client has received is skipped;
//   - an event it has not, at a position that covers the client's, is
//     sent as it is, and from then on every event is;
//   - an event it has not, behind the client in other partitions, is sent
//     with the client's own ID, merged with the event's position: the
//     event's own ID would resume the client behind where it stands.
//
// The log applies it to a client that joined it at a position it did not
// hold (client.collectAll), and a Replay to the events a History sends
// (Replay.SendEncoded): the same rule, from the same type.

// A resumer is where a resumed client stands while the events it is sent
// stand behind it in some partition.
type resumer struct {
	o    Ordering
	skip Position // the client's position; nil once the events are past it
	ids  []byte   // the ID lines of re-IDed events, until they are written
}

// step applies the rule to the event at pos. It reports whether the client
// has received the event (skip it), and for one it has not but must be
// sent with an ID of its own, returns that ID's line, "id: ID\n", valid
// until reset.
func (r *resumer) step(pos Position) (received bool, idLine []byte) {
	if r.skip == nil || pos == nil {
		return false, nil
	}
	received = r.o.Received(r.skip, pos)
	if r.o.Covers(pos, r.skip) {
		r.skip = nil // the events are past the client: what follows is new
	}
	if received || r.skip == nil {
		return received, nil
	}
	n := len(r.ids)
	r.ids = append(r.ids, "id: "...)
	r.skip, r.ids = r.o.Merge(r.skip, pos, r.ids)
	r.ids = append(r.ids, '\n')
	return false, r.ids[n:len(r.ids):len(r.ids)]
}

// reset forgets the ID lines, once written.
func (r *resumer) reset() { r.ids = r.ids[:0] }

// idOf returns the ID in an ID line.
func idOf(line []byte) []byte { return line[len("id: ") : len(line)-1] }

// withoutID returns wire, the encoding of an event with ID id, without
// its ID line: appendWire writes it first.
func withoutID(wire []byte, id string) []byte {
	if id == "" {
		return wire
	}
	return wire[len("id: ")+len(id)+1:]
}
