package esource

import (
	"math/bits"
	"time"
)

// A Filter chooses the events that a client receives: a client served by
// Serve with a Filter is sent the events the Filter matches, and every gap event
// and every event without data, which only moves the browser's last event
// ID. The events it skips are not lost to it: at most once per progress
// interval (see WithProgressInterval) it is sent a frame with only the ID
// of the last event skipped, which fires no event in a browser but moves
// its last event ID, so that a reconnection does not read them again.
//
// An EventSource matches each event once per distinct filter, not once per
// client: clients whose filters have the same Key share one registration,
// up to MaxFilters of them at a time. A registration keeps an index of the
// log's events that its filter passes, with copies of them side by side
// (counted in the log's byte cap), which its clients read: a client's work
// is in proportion to the events it is sent, not to all that are
// published, and it sends them in a few buffers. The clients of further
// filters match each event themselves. Match is called under the log's
// lock: it must be pure, cheap and safe for concurrent use.
type Filter interface {
	// Key identifies the filter: two filters with the same key match the
	// same events.
	Key() string
	// Match reports whether a client receives an event of type typ (empty
	// for "message") with the labels its publisher gave it.
	Match(typ string, labels []string) bool
}

// MaxFilters is how many distinct filters an EventSource matches once per
// event for all their clients.
const MaxFilters = 64

// A filterSlot is a registered filter and the number of its clients.
type filterSlot struct {
	f    Filter
	key  string
	refs int
	wake chan struct{} // closed and replaced when events for it are published
	lost uint64        // 1 + seq of the newest evicted event it matched, if any
	// index lists the events in the log that its clients are sent,
	// oldest first. An event that does not follow another of them in the
	// log is copied, once, into pages of the filter's own, side by side
	// with the others: a write costs per buffer as well as per byte, and
	// so its clients send a batch in a few buffers, not one per event.
	index []indexed
	page  []byte // where the next copy goes
}

// An indexed event is one that a filter's clients are sent.
type indexed struct {
	seq    uint64
	wire   []byte // its wire bytes: in the log's page, or a copy
	copied bool   // wire is a copy, counted in the log's size
}

// add appends the newest event of the log, seq, with wire bytes wire, to
// s's index, and returns the bytes it copied.
func (s *filterSlot) add(seq uint64, wire []byte) int {
	if n := len(s.index); n > 0 && s.index[n-1].seq == seq-1 {
		// It follows the last in the log: sent with it from there.
		s.index = append(s.index, indexed{seq: seq, wire: wire})
		return 0
	}
	if cap(s.page)-len(s.page) < len(wire) {
		s.page = make([]byte, 0, max(pageSize, len(wire)))
	}
	at := len(s.page)
	s.page = append(s.page, wire...)
	s.index = append(s.index, indexed{seq: seq, wire: s.page[at:], copied: true})
	return len(wire)
}

// drop removes the events before head from s's index, and returns the
// bytes of the copies it removed.
func (s *filterSlot) drop(head uint64) (copies int) {
	i := 0
	for ; i < len(s.index) && s.index[i].seq < head; i++ {
		if s.index[i].copied {
			copies += len(s.index[i].wire)
		}
	}
	clear(s.index[:i])
	s.index = s.index[i:]
	return copies
}

// addFilter registers a client's filter and returns its bit in the
// entries' pass sets, or 0 when every slot is taken: the client then
// matches events itself. A new filter is matched against the log's events
// at once. es.mu must be held.
func (es *EventSource) addFilter(f Filter) uint64 {
	key := f.Key()
	if i, ok := es.slots[key]; ok {
		es.filters[i].refs++
		return 1 << i
	}
	if es.active == ^uint64(0) {
		return 0
	}
	i := bits.TrailingZeros64(^es.active)
	bit := uint64(1) << i
	es.filters[i] = filterSlot{f: f, key: key, refs: 1, wake: make(chan struct{})}
	es.slots[key] = i
	es.active |= bit
	s := &es.filters[i]
	for seq := es.head; seq < es.next; seq++ {
		e := &es.ring[seq%uint64(len(es.ring))]
		e.pass &^= bit
		if f.Match(e.typ, e.labels) {
			e.pass |= bit
		}
		if e.always || e.pass&bit != 0 {
			es.size += s.add(seq, e.wire)
		}
	}
	return bit
}

// removeFilter unregisters a client's filter, registered at bit. es.mu
// must be held.
func (es *EventSource) removeFilter(bit uint64) {
	i := bits.TrailingZeros64(bit)
	s := &es.filters[i]
	if s.refs--; s.refs == 0 {
		es.size -= s.drop(es.next)
		delete(es.slots, s.key)
		*s = filterSlot{}
		es.active &^= bit
	}
}

// matchFilters returns the pass set of an event: a bit for each
// registered filter that matches it. es.mu must be held.
func (es *EventSource) matchFilters(typ string, labels []string) uint64 {
	var pass uint64
	for set := es.active; set != 0; set &= set - 1 {
		i := bits.TrailingZeros64(set)
		if es.filters[i].f.Match(typ, labels) {
			pass |= 1 << i
		}
	}
	return pass
}

// index adds e, the newest event of the log, seq, to the index of each
// filter in set. es.mu must be held.
func (es *EventSource) index(set, seq uint64, e *entry) {
	for ; set != 0; set &= set - 1 {
		es.size += es.filters[bits.TrailingZeros64(set)].add(seq, e.wire)
	}
}

// passes reports whether c is sent e.
func (c *client) passes(e *entry) bool {
	switch {
	case c.filter == nil || e.always:
		return true
	case c.bit != 0:
		return e.pass&c.bit != 0
	}
	return c.filter.Match(e.typ, e.labels)
}

// alwaysSent reports whether an event goes to every client, whatever its
// filter: a gap, or an event that only carries an ID.
func alwaysSent(ev *Event) bool {
	return ev.Data == nil || ev.Type == GapType
}

// progressDue reports whether c, which skipped events since it last told
// its browser where it stands, may be told now; if not, it returns how
// long until it may.
func (c *client) progressDue(now time.Duration) (bool, time.Duration) {
	d := c.es.cfg.progress
	if d <= 0 {
		return false, 0
	}
	wait := d - (now - c.progressAt)
	return wait <= 0, wait
}

// progressLine returns a frame with only an id line: it fires no event,
// and sets the browser's last event ID.
func progressLine(id string) []byte {
	b := make([]byte, 0, len("id: ")+len(id)+2)
	b = append(b, "id: "...)
	b = append(b, id...)
	return append(b, '\n', '\n')
}
