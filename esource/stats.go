package esource

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Stats are an EventSource's counters, as [EventSource.Stats] reads them.
// The counts ending in "total" grow from zero for the EventSource's life.
type Stats struct {
	// Clients is the number of clients being served, Tee iterators
	// included.
	Clients int
	// Published is the number of events published (in total).
	Published uint64
	// BytesSent is the number of bytes of event stream written to clients
	// (in total): events, gap events, comments and retry lines, without
	// the HTTP framing.
	BytesSent uint64
	// Replays is the number of times a client was handed to the History
	// hook (in total): a resume that the log could not serve, or a client
	// that fell behind the log.
	Replays uint64
	// Slow is the number of times a client fell behind the log (in total):
	// it was then caught up through the History hook, or sent a gap event.
	Slow uint64
	// Gaps counts the gap events sent (in total), by reason: one published
	// to the log counts once, one sent to a single client once. At most
	// MaxGapReasons reasons are told apart; any other is counted as
	// "other".
	Gaps map[string]uint64
}

// MaxGapReasons bounds the number of gap reasons that Stats tells apart.
const MaxGapReasons = 32

// counters are the counts of an EventSource that its clients update
// outside es.mu. The hot paths add to them at most once per write, not per
// event; each client counts its bytes in a counter of its own.
type counters struct {
	sentGone atomic.Uint64 // bytes sent by clients that are gone
	replays  atomic.Uint64
	slow     atomic.Uint64

	gapMu sync.Mutex
	gaps  map[string]uint64
}

// gap counts a gap event of ev's data, if ev is one.
func (k *counters) gap(ev *Event) {
	if ev.Type != GapType {
		return
	}
	var reason string
	switch g := ev.Data.(type) {
	case Gap:
		reason = g.Reason
	case *Gap:
		reason = g.Reason
	default:
		return // a message that calls itself a gap
	}
	k.gapMu.Lock()
	defer k.gapMu.Unlock()
	if k.gaps == nil {
		k.gaps = make(map[string]uint64)
	}
	if _, ok := k.gaps[reason]; !ok && len(k.gaps) >= MaxGapReasons-1 {
		reason = "other"
	}
	k.gaps[reason]++
}

// Stats returns the EventSource's counters. It costs a pass over the
// clients, under a read lock: it is meant for a scrape every few seconds.
func (es *EventSource) Stats() Stats {
	es.mu.RLock()
	st := Stats{Clients: len(es.clients), Published: es.next}
	for c := range es.clients {
		st.BytesSent += c.sent.Load()
	}
	// Read under es.mu, which unregister holds to move a client's bytes
	// here: none is counted twice or missed.
	st.BytesSent += es.stats.sentGone.Load()
	es.mu.RUnlock()
	st.Replays = es.stats.replays.Load()
	st.Slow = es.stats.slow.Load()
	es.stats.gapMu.Lock()
	st.Gaps = maps.Clone(es.stats.gaps)
	es.stats.gapMu.Unlock()
	if st.Gaps == nil {
		st.Gaps = map[string]uint64{}
	}
	return st
}

// write writes bufs to c's sink and counts the bytes once written.
func (c *client) write(bufs [][]byte) error {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	err := c.sink.write(bufs)
	if err == nil {
		c.sent.Add(uint64(n))
		c.wroteAt = c.es.since()
	}
	return err
}
