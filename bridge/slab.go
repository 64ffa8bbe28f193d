package bridge

import (
	"unsafe"

	"github.com/esbridge/esbridge/esource"
)

// A slab hands out what a catch-up reader makes for each message it reads
// (the event's encoding, its ID and labels, its decoded position), and
// the live reader of a route (labels, where it stands), as pieces of
// larger allocations, so that a message costs no allocation of its own: a
// catch-up reader reads as fast as the broker sends, and allocations per
// message were a quarter of its time, most of it the garbage collector's.
//
// What a slab hands out is never written again. A piece lives as long as
// anything refers to it, and keeps the rest of its chunk alive: the ring
// of a catch-up reader holds its events in the order they were made, so
// at most a chunk of each kind more than the ring holds. An event ID can
// outlive them: a client keeps the ID of the last event it was sent, and
// with it that ID's chunk of strings; and a client that joined the log
// from a catch-up reader keeps the position it joined at until the log
// sends it an event. So the chunks of strings, event IDs and positions are
// small, 4 KB in all. The live reader's IDs are strings of their own: every
// client of the log keeps one, idle clients included, and a chunk each
// would count against the memory of an idle connection. A slab is not
// safe for concurrent use.
type slab struct {
	wire   []byte // event encodings, one after another
	text   []byte // the bytes of strings handed out
	ids    []eventID
	refs   []Position
	offs   []uint64
	labels []string
}

// Chunk sizes of a slab. A piece larger than a quarter of its chunk is
// allocated alone.
const (
	slabWire   = 64 << 10
	slabText   = 1 << 10
	slabIDs    = 16
	slabOffs   = 256
	slabLabels = 512
)

// encode encodes ev at pos into the slab (see esource.AppendEncode): the
// events encoded one after another lie one after another.
func (s *slab) encode(ev esource.Event, pos esource.Position) (esource.Encoded, error) {
	need := len(ev.ID) + len(ev.Type) + 64 // the field names, and data lines
	switch d := ev.Data.(type) {
	case string:
		need += len(d) + len(d)/8
	case []byte:
		need += len(d) + len(d)/8
	default:
		need += 256
	}
	if need > slabWire/4 {
		return esource.Encode(ev, pos)
	}
	if cap(s.wire)-len(s.wire) < need {
		s.wire = make([]byte, 0, slabWire)
	}
	e, wire, err := esource.AppendEncode(s.wire, ev, pos)
	s.wire = wire // if need was short, append moved it: still only appended to
	return e, err
}

// string returns b as a string in the slab.
func (s *slab) string(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > slabText/4 {
		return string(b)
	}
	if cap(s.text)-len(s.text) < len(b) {
		s.text = make([]byte, 0, slabText)
	}
	n := len(s.text)
	s.text = append(s.text, b...)
	return unsafe.String(&s.text[n], len(b))
}

// eventID returns a zero eventID in the slab.
func (s *slab) eventID() *eventID {
	if len(s.ids) == 0 {
		s.ids = make([]eventID, slabIDs)
	}
	t := &s.ids[0]
	s.ids = s.ids[1:]
	return t
}

// position returns a copy of p in the slab.
func (s *slab) position(p Position) Position {
	if len(p) > slabOffs/4 {
		return append(Position(nil), p...)
	}
	if len(s.offs) < len(p) {
		s.offs = make([]uint64, slabOffs)
	}
	q := s.offs[:len(p):len(p)]
	copy(q, p)
	s.offs = s.offs[len(p):]
	return q
}

// positionRef returns a pointer to a copy of p in the slab.
func (s *slab) positionRef(p Position) *Position {
	if len(s.refs) == 0 {
		s.refs = make([]Position, slabIDs)
	}
	ref := &s.refs[0]
	s.refs = s.refs[1:]
	*ref = s.position(p)
	return ref
}

// strings returns n empty strings in the slab.
func (s *slab) strings(n int) []string {
	if n > slabLabels/4 {
		return make([]string, n)
	}
	if len(s.labels) < n {
		s.labels = make([]string, slabLabels)
	}
	l := s.labels[:n:n]
	s.labels = s.labels[n:]
	return l
}
