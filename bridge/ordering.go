package bridge

import (
	"slices"
)

// Covers implements esource.Ordering: a client at last has received the
// event id and all before it when it is at or past id's position in every
// partition.
func (r *route) Covers(last, id string) bool {
	v, ok1 := r.positionOf(last)
	l, ok2 := r.logPosition(id)
	if !ok1 || !ok2 {
		return false
	}
	for i, off := range l {
		if off > 0 && (i >= len(v) || v[i] < off) {
			return false
		}
	}
	return true
}

// Received implements esource.Ordering: a client at last has received the
// event id when it is past it in the event's partition.
func (r *route) Received(last, id string) bool {
	t, err := r.codec.decode(id)
	if err != nil || t.kind != kindEvent {
		return r.Covers(last, id)
	}
	v, ok := r.positionOf(last)
	p := t.partition
	return ok && p < len(v) && v[p] >= t.pos[p]
}

// logPosition is positionOf for IDs of the log, which esource compares
// again and again (the oldest event's): it keeps the last one decoded.
func (r *route) logPosition(id string) (Position, bool) {
	if d := r.decoded.Load(); d != nil && d.id == id {
		return d.pos, true
	}
	pos, ok := r.positionOf(id)
	if ok {
		r.decoded.Store(&decodedID{id: id, pos: pos})
	}
	return pos, ok
}

// A decodedID is an ID with the position it stands for.
type decodedID struct {
	id  string
	pos Position
}

// Merge implements esource.Ordering: the ID of the event id for a client
// at last, which is past id's position in some partitions.
func (r *route) Merge(last, id string) string {
	t, err := r.codec.decode(id)
	v, ok := r.positionOf(last)
	if err != nil || !ok || (t.kind != kindEvent && t.kind != kindPosition) {
		return id
	}
	pos := slices.Clone(t.pos)
	for i := range min(len(pos), len(v)) {
		pos[i] = max(pos[i], v[i])
	}
	if t.kind == kindPosition {
		return r.codec.position(pos)
	}
	return r.codec.event(pos, t.partition)
}

// positionOf returns the position an ID stands for.
func (r *route) positionOf(id string) (Position, bool) {
	t, err := r.codec.decode(id)
	switch {
	case err != nil:
		return nil, false
	case t.kind == kindOrigin:
		return Position{}, true
	case t.kind == kindPosition || t.kind == kindEvent:
		return t.pos, true
	}
	return nil, false
}
