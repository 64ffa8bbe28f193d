package esource

import (
	"math/bits"
	"slices"
	"time"
)

// A Filter chooses the events that a client receives: a client served by
// ServeFiltered is sent the events its Filter matches, and every gap event
// and every event without data, which only moves the browser's last event
// ID. The events it skips are not lost to it: at most once per progress
// interval (see WithProgressInterval) it is sent a frame with only the ID
// of the last event skipped, which fires no event in a browser but moves
// its last event ID, so that a reconnection does not read them again.
//
// An EventSource matches each event once per distinct filter, not once per
// client: clients whose filters have the same Key share one registration,
// up to MaxFilters of them at a time, which keeps the seqs of the log's
// events it passes. Its clients read that index, so each client's work is
// in proportion to the events it is sent, not to all that are published.
// The clients of further filters match each event themselves. Match is called under the log's
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
	// seqs are the seqs of the events in the log that its clients are
	// sent, in order; it may start with evicted ones. Trimmed as it grows,
	// it holds at most twice as many as the log.
	seqs []uint64
}

// add appends seq, that of the newest event in the log, to s.seqs. When
// they are full, it first drops those of events evicted before head.
func (s *filterSlot) add(seq, head uint64) {
	if len(s.seqs) == cap(s.seqs) {
		if i, _ := slices.BinarySearch(s.seqs, head); i > 0 {
			s.seqs = s.seqs[:copy(s.seqs, s.seqs[i:])]
		}
	}
	s.seqs = append(s.seqs, seq)
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
			s.add(seq, es.head)
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

// index adds seq, the newest event's, to the index of each filter in
// set. es.mu must be held.
func (es *EventSource) index(set, seq uint64) {
	for ; set != 0; set &= set - 1 {
		es.filters[bits.TrailingZeros64(set)].add(seq, es.head)
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
func (c *client) progressDue(now time.Time) (bool, time.Duration) {
	d := c.es.cfg.progress
	if d <= 0 {
		return false, 0
	}
	wait := d - now.Sub(c.progressAt)
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
