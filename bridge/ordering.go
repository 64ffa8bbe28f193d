package bridge

import (
	"encoding/base64"
	"slices"

	"github.com/esbridge/esbridge/esource"
)

// The route is an esource.Ordering: its event IDs are positions, decoded
// once into eventIDs (an event's when it is published, a client's when it
// connects), which the other methods compare without decoding or
// allocating.

// Decode implements esource.Ordering: the eventID of an ID of a
// position, an event, or the origin of the stream, as the door decodes it
// (see decodeStart).
func (r *route) Decode(id string) (esource.Position, bool) {
	t, gap := r.decodeStart(id)
	if gap != nil {
		return nil, false
	}
	return t, true
}

// Covers implements esource.Ordering: a client at last has received the
// event at p and all before it when it is at or past p's position in every
// partition.
func (r *route) Covers(last, p esource.Position) bool {
	l, t := last.(*eventID), p.(*eventID)
	if l.kind == kindSnapshot {
		return false // a client waiting for its snapshot has received nothing
	}
	if apart, newer := r.apart(l, t); apart {
		return newer
	}
	return covers(l.pos, t.pos)
}

// apart reports whether a and b are positions in different incarnations
// of the stream, and if so whether a's is the current one: then a is past
// all of b's incarnation, which ended before the current one began.
func (r *route) apart(a, b *eventID) (apart, newer bool) {
	if a.inc == b.inc || a.inc == 0 || b.inc == 0 {
		return false, false
	}
	return true, a.inc == r.codec().inc
}

// covers reports whether v is at or past p in every partition.
func covers(v, p Position) bool {
	for i, off := range p {
		if off > 0 && (i >= len(v) || v[i] < off) {
			return false
		}
	}
	return true
}

// Received implements esource.Ordering: a client at last has received the
// event at p when it is past it in the event's partition.
func (r *route) Received(last, p esource.Position) bool {
	l, t := last.(*eventID), p.(*eventID)
	if l.kind == kindSnapshot {
		return false
	}
	if t.kind != kindEvent {
		return r.Covers(last, p)
	}
	if apart, newer := r.apart(l, t); apart {
		return newer
	}
	v, k := l.pos, t.partition
	return k < len(v) && v[k] >= t.pos[k]
}

// Merge implements esource.Ordering: where a client at last stands once it
// receives the event at p, which is behind it in some partitions, and
// that position's ID appended to id. A position that Merge made is merged
// in place: a long catch-up allocates nothing per event.
func (r *route) Merge(last, p esource.Position, id []byte) (esource.Position, []byte) {
	l, t := last.(*eventID), p.(*eventID)
	m := l
	if !l.merged {
		m = &eventID{merged: true, pos: slices.Clone(l.pos)}
	}
	m.kind, m.inc, m.partition, m.pos = kindEvent, t.inc, t.partition, merge(m.pos, t.pos)
	if len(m.pos) == 1 {
		m.kind = kindPosition
	}
	c := r.codec()
	c.inc = t.inc
	var raw [64]byte
	return m, base64.RawURLEncoding.AppendEncode(id, c.appendMessage(raw[:0], m.pos, m.partition))
}

// merge sets v to the greater of v and p in each partition, growing it if
// p has more, and returns it.
func merge(v, p Position) Position {
	if n := len(p) - len(v); n > 0 {
		v = append(v, make(Position, n)...)
	}
	for i, off := range p {
		v[i] = max(v[i], off)
	}
	return v
}
