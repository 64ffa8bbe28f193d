package esource

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// ContentType is the media type of an event stream response.
const ContentType = "text/event-stream; charset=utf-8"

// Errors returned by this package. Test for them with errors.Is.
var (
	// ErrClosed is returned by every method called after Close or Shutdown.
	ErrClosed = errors.New("esource: event source closed")

	// ErrInvalidEvent is returned for an event that cannot be encoded.
	ErrInvalidEvent = errors.New("esource: invalid event")

	// ErrInvalidOption is returned by New for an option out of range.
	ErrInvalidOption = errors.New("esource: invalid option")

	// ErrCaughtUp is returned by Replay.Send once the client has reached
	// the log; the History hook then returns.
	ErrCaughtUp = errors.New("esource: client caught up with the log")
)

// An EventSource fans one stream of events out to any number of clients.
//
// It keeps the newest events, encoded once, in a bounded log. Each client
// is a cursor into that log: its writer wakes when the log grows and writes
// everything it has not sent yet in one write (consecutive events lie
// side by side in memory). A publisher never waits for a client; a client
// that falls behind the log is handed to the History hook, or told of its
// loss with a gap event.
//
// All methods are safe for concurrent use.
type EventSource struct {
	cfg      config
	ordering Ordering // cfg.history, if it is one

	mu      sync.RWMutex
	ring    []entry           // the log; event seq lives at ring[seq%len(ring)]
	head    uint64            // seq of the oldest event in the log
	next    uint64            // seq the next event gets
	size    int               // wire bytes in the log
	evicted entry             // the event before head, if any (ID and position)
	ids     map[string]uint64 // ID -> seq, for the events in the log
	longest int               // length of the longest ID ever published
	page    []byte            // where the next events' bytes go
	wake    chan struct{}     // closed and replaced to wake the clients
	woken   chan struct{}     // a replaced wake, for unlock to close
	pending uint64            // the filters with events since their last wake
	wokenBy []chan struct{}   // replaced wakes of filters, for unlock to close
	lostAll uint64            // 1 + seq of the newest evicted event sent to all, if any
	waking  *time.Timer       // wakes the clients once a wave took too long, when armed
	armed   bool              // waking is set to fire
	// A wave is the clients woken by one wake, until each has written what
	// it found and waits again; events published meanwhile are owed to the
	// waiting clients, and woken for when the wave ends (see wakeClients).
	// Only clients of every event (no Filter) take part.
	waiting  atomic.Int64 // clients waiting on wake
	inWave   atomic.Int64 // clients of the last wave still writing
	owed     atomic.Bool  // events published since the last wake
	catching map[*Replay]struct{}
	clients  map[*client]struct{}
	filters  [MaxFilters]filterSlot // the clients' distinct filters
	slots    map[string]int         // filter key -> index in filters
	active   uint64                 // a bit for each filter in use
	closed   bool
	stats    counters
	epoch    time.Time      // the origin of the clients' times (see since)
	wheel    *wheel         // the clients' heartbeats and probes
	bufs     pool[[][]byte] // batches being written (see client.release)
	bytes    pool[[]byte]   // the bytes of writes gathered into one (see connSink)
	done     chan struct{}  // closed by Close and Shutdown
	drained  chan struct{}  // closed once closed and no client is left
}

// An entry is an event in the log. Its wire bytes are a slice of a page,
// shared by events published one after another, so that a client sends a
// run of them with one write. Pages are never written over: a writer may
// still be sending an evicted event.
type entry struct {
	id     string
	pos    Position // decoded by the Ordering, if any
	wire   []byte
	typ    string   // the event's type, for filters
	labels []string // the event's labels, for filters
	pass   uint64   // a bit for each registered filter that matches it
	always bool     // sent whatever the filter (see alwaysSent)
}

// pageSize is the size of the pages that hold events' wire bytes.
const pageSize = 64 << 10

// New returns an EventSource configured by opts, or ErrInvalidOption
// wrapped with the reason.
func New(opts ...Option) (*EventSource, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.heartbeat > 0 {
		cfg.heartbeat = min(cfg.heartbeat, MaxHeartbeat(cfg.writeTimeout))
	}
	es := &EventSource{
		cfg:      cfg,
		ring:     make([]entry, min(cfg.backlog, 64)),
		ids:      make(map[string]uint64),
		wake:     make(chan struct{}),
		catching: make(map[*Replay]struct{}),
		clients:  make(map[*client]struct{}),
		slots:    make(map[string]int),
		done:     make(chan struct{}),
		drained:  make(chan struct{}),
	}
	es.ordering, _ = cfg.history.(Ordering)
	es.wheel = newWheel(wheelStep(cfg.heartbeat, cfg.probe))
	es.epoch = es.wheel.start
	es.waking = time.AfterFunc(time.Hour, es.wakeLater)
	es.waking.Stop()
	return es, nil
}

// Publish encodes ev once and appends it to the log, from where every
// client sends it. It never waits for a client. It returns ErrInvalidEvent
// for an event that cannot be encoded and ErrClosed after shutdown.
func (es *EventSource) Publish(ev Event) error {
	wire, err := ev.appendWire(nil)
	if err != nil {
		return err
	}
	pos := es.position(ev.ID)
	es.mu.Lock()
	defer es.unlock()
	if es.closed {
		return ErrClosed
	}
	seq := es.next
	if n := len(es.ring); n == int(es.next-es.head) {
		if n < es.cfg.backlog {
			es.resize(min(2*n, es.cfg.backlog))
		} else {
			es.evict()
		}
	}
	if cap(es.page)-len(es.page) < len(wire) {
		es.page = make([]byte, 0, max(pageSize, len(wire)))
	}
	at := len(es.page)
	es.page = append(es.page, wire...)
	e := entry{id: ev.ID, pos: pos, wire: es.page[at:], typ: ev.Type, labels: ev.Labels, always: alwaysSent(&ev)}
	if e.always {
		es.pending = ^uint64(0)
		es.index(es.active, seq, &e)
	} else if es.active != 0 {
		e.pass = es.matchFilters(e.typ, e.labels)
		es.pending |= e.pass
		es.index(e.pass, seq, &e)
	}
	es.ring[seq%uint64(len(es.ring))] = e
	es.next++
	es.size += len(wire)
	for es.cfg.backlogBytes > 0 && es.size > es.cfg.backlogBytes && es.next-es.head > 1 {
		es.evict()
	}
	if ev.ID != "" {
		es.ids[ev.ID] = seq
		es.longest = max(es.longest, len(ev.ID))
		for r := range es.catching {
			switch {
			case r.joined.Load():
			case r.last == ev.ID:
				r.join(seq+1, nil)
			case pos != nil && r.lastPos != nil && es.ordering.Covers(pos, r.lastPos):
				// The log has reached the client: it can take it over.
				// (Not before: the client may be ahead of what the
				// broker holds, which only the History can tell.)
				r.tryJoin()
			}
		}
	}
	es.wakeClients()
	if ev.Type == GapType {
		es.stats.gap(&ev)
	}
	return nil
}

// wakeClients wakes the clients to send what was published: at once if
// the clients of the last wake have all written what they found (the
// clients are idle), else when the last of them has, or after the flush
// interval if that comes first (a client stuck in a slow write). So an
// event goes out at once while the clients keep up, and events that come
// while the clients are still writing go to each one in one write: the
// batches grow with the load, with no fixed window. es.mu must be held,
// and released with unlock, which wakes them.
func (es *EventSource) wakeClients() {
	// With woken set, unlock wakes every client: no client has seen the
	// new wake channel yet.
	if es.woken != nil {
		es.wakeFilters()
		return
	}
	if es.inWave.Load() > 0 && es.cfg.flushInterval > 0 {
		es.owed.Store(true)
		// Read again after owed is set: a client that ended the wave
		// meanwhile saw owed set, or this sees the wave ended.
		if es.inWave.Load() > 0 {
			if !es.armed {
				es.armed = true
				es.waking.Reset(es.cfg.flushInterval)
			}
			return
		}
	}
	es.wakeNow()
}

// wakeNow starts a wave: it replaces the wake channels, for unlock to
// close. es.mu must be held.
func (es *EventSource) wakeNow() {
	es.owed.Store(false)
	es.inWave.Store(es.waiting.Load())
	es.woken = es.wake
	es.wake = make(chan struct{})
	es.wakeFilters()
}

// leaveWave is called by a client of the last wave once it has written
// what it found: the last one wakes the clients for the events owed.
func (es *EventSource) leaveWave() {
	if es.inWave.Add(-1) > 0 || !es.owed.Load() {
		return
	}
	es.mu.Lock()
	defer es.unlock()
	if es.owed.Load() {
		es.wakeNow()
	}
}

// wakeFilters replaces the wake channel of each filter that events were
// published for since its last wake, for unlock to close: a filtered
// client wakes for the events it is sent, not for those it skips. es.mu
// must be held.
func (es *EventSource) wakeFilters() {
	for set := es.pending & es.active; set != 0; set &= set - 1 {
		s := &es.filters[bits.TrailingZeros64(set)]
		es.wokenBy = append(es.wokenBy, s.wake)
		s.wake = make(chan struct{})
	}
	es.pending = 0
}

// unlock releases es.mu, then closes the wake channel that wakeClients
// replaced, if any. Closed under es.mu, it would wake clients into a held
// lock: readying thousands of goroutines takes milliseconds, in which
// those that run block on es.mu.RLock at once, and the publisher then
// releases them one at a time in Unlock, often preempted on the way and
// queued behind the whole crowd. With 15,000 clients that was most of
// them, woken twice, and the p99 (bench's scenario W).
func (es *EventSource) unlock() {
	woken, by := es.woken, es.wokenBy
	es.woken, es.wokenBy = nil, nil
	es.mu.Unlock()
	if woken != nil {
		close(woken)
	}
	for _, w := range by {
		close(w)
	}
}

// wakeLater wakes the clients for the events owed when a wave has taken
// longer than the flush interval.
func (es *EventSource) wakeLater() {
	es.mu.Lock()
	defer es.unlock()
	es.armed = false
	if es.owed.Load() {
		es.wakeNow()
	}
}

// evict drops the oldest event of the log. es.mu must be held.
func (es *EventSource) evict() {
	i := es.head % uint64(len(es.ring))
	e := es.ring[i]
	if e.id != "" && es.ids[e.id] == es.head {
		delete(es.ids, e.id)
	}
	es.size -= len(e.wire)
	es.ring[i] = entry{}
	es.evicted = entry{id: e.id, pos: e.pos}
	// A filtered client that sleeps past evicted events it skips is not
	// behind; past one it is sent, it is.
	if e.always {
		es.lostAll = es.head + 1
	} else {
		for set := e.pass & es.active; set != 0; set &= set - 1 {
			es.filters[bits.TrailingZeros64(set)].lost = es.head + 1
		}
	}
	es.head++
	for set := es.active; set != 0; set &= set - 1 {
		es.size -= es.filters[bits.TrailingZeros64(set)].drop(es.head)
	}
}

// position returns the position of id decoded by the Ordering, or nil.
func (es *EventSource) position(id string) Position {
	if es.ordering == nil || id == "" {
		return nil
	}
	if pos, ok := es.ordering.Decode(id); ok {
		return pos
	}
	return nil
}

// joinPoint returns where in the log a client whose last event was last,
// at lastPos, continues: after the event last, or with an Ordering after
// the newest event that lastPos covers, skipping from there on the events
// that lastPos has received (skip is then lastPos). It reports false if
// the log cannot serve the client, and for a client ahead of the log's
// newest event, which only the History can tell from one the broker never
// had. es.mu must be held.
func (es *EventSource) joinPoint(last string, lastPos Position) (seq uint64, skip Position, ok bool) {
	if len(last) <= es.longest {
		if seq, ok := es.ids[last]; ok {
			return seq + 1, nil, true
		}
	}
	o := es.ordering
	if o == nil || lastPos == nil || es.next == 0 {
		return 0, nil, false
	}
	// Everything before the log must have been received: the event before
	// it, or its first event when none was ever evicted.
	oldest := es.evicted.pos
	if es.head == 0 {
		oldest = es.ring[0].pos
	}
	if oldest == nil || !o.Covers(lastPos, oldest) {
		return 0, nil, false
	}
	newest := es.ring[(es.next-1)%uint64(len(es.ring))].pos
	if newest != nil && o.Covers(lastPos, newest) && !o.Covers(newest, lastPos) {
		return 0, nil, false // ahead of the log
	}
	// Any covered event will do, the skipping makes up the rest; the newest
	// one found by bisection skips least.
	lo, hi := es.head, es.next // lo-1 is covered
	if es.head == 0 {
		lo = 1
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if pos := es.ring[mid%uint64(len(es.ring))].pos; pos != nil && o.Covers(lastPos, pos) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lastPos, true
}

// idBefore returns the ID of the event before seq, which must be in
// [head, next]. es.mu must be held.
func (es *EventSource) idBefore(seq uint64) string {
	if seq == es.head {
		return es.evicted.id
	}
	return es.ring[(seq-1)%uint64(len(es.ring))].id
}

// SetBacklog changes the number of events kept in memory, dropping the
// oldest at once if more are held. It returns ErrInvalidOption for fewer
// than one event and ErrClosed after shutdown.
func (es *EventSource) SetBacklog(events int) error {
	if events < 1 {
		return fmt.Errorf("%w: backlog %d < 1", ErrInvalidOption, events)
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.closed {
		return ErrClosed
	}
	for es.next-es.head > uint64(events) {
		es.evict()
	}
	es.cfg.backlog = events
	es.resize(min(events, max(int(es.next-es.head), 64)))
	return nil
}

// resize lays the log out in a ring of n entries, n at least the number of
// events held. es.mu must be held.
func (es *EventSource) resize(n int) {
	ring := make([]entry, n)
	for seq := es.head; seq < es.next; seq++ {
		ring[seq%uint64(n)] = es.ring[seq%uint64(len(es.ring))]
	}
	es.ring = ring
}

// since returns the time since es's epoch, on the monotonic clock: the
// clients keep their times so, in 8 bytes each.
func (es *EventSource) since() time.Duration { return time.Since(es.epoch) }

// A pool holds what writes need for a while, such as slices of buffers:
// a client holds one only while it writes, not while it waits.
type pool[T any] struct{ p sync.Pool }

// get returns a value from the pool, or a new one.
func (p *pool[T]) get() *T {
	if v, ok := p.p.Get().(*T); ok {
		return v
	}
	return new(T)
}

// put returns v to the pool.
func (p *pool[T]) put(v *T) { p.p.Put(v) }

// Clients returns the number of clients being served, Tee iterators included.
func (es *EventSource) Clients() int {
	es.mu.RLock()
	defer es.mu.RUnlock()
	return len(es.clients)
}

// Close ends every stream, as Shutdown does, without waiting: each client
// is sent what was published before Close, then a retry line, in the
// background. Close is idempotent and always returns nil.
func (es *EventSource) Close() error {
	es.mu.Lock()
	defer es.mu.Unlock()
	es.close()
	return nil
}

// close stops publishing and tells every client to finish. es.mu must be held.
func (es *EventSource) close() {
	if es.closed {
		return
	}
	es.closed = true
	es.waking.Stop()
	close(es.done)
	// Wake the waiting clients, which find es closed and end their
	// streams: they wait on no other channel for it (each channel a
	// client waits on costs it a record in the runtime).
	close(es.wake)
	es.wake = make(chan struct{})
	for set := es.active; set != 0; set &= set - 1 {
		f := &es.filters[bits.TrailingZeros64(set)]
		close(f.wake)
		f.wake = make(chan struct{})
	}
	if len(es.clients) == 0 {
		close(es.drained)
	}
}

// Shutdown ends every stream gracefully and waits for them: each client is
// sent every event published before Shutdown, then a short, jittered retry
// line so that browsers reconnect (to this instance's successor, or to
// another one), and its response ends. New requests get the same retry line
// at once. If ctx ends first, the remaining writes are cut short and
// Shutdown returns ctx.Err(). After Shutdown, Publish, SetBacklog and Tee
// return ErrClosed. Shutdown is idempotent.
func (es *EventSource) Shutdown(ctx context.Context) error {
	es.mu.Lock()
	es.close()
	es.mu.Unlock()
	select {
	case <-es.drained:
		return nil
	case <-ctx.Done():
	}
	es.mu.RLock()
	for c := range es.clients {
		c.sink.abort()
	}
	es.mu.RUnlock()
	return ctx.Err()
}

// register adds c to the clients, with its cursor at the next event to be
// published, or reports false after shutdown.
func (es *EventSource) register(c *client) bool {
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.closed {
		return false
	}
	es.clients[c] = struct{}{}
	c.resume.o = es.ordering
	if c.filter != nil {
		c.bit = es.addFilter(c.filter)
	}
	c.cursor = es.next
	// Should the client fall behind the log before it is sent an event,
	// it is replayed from the newest event it did not need.
	c.lastID = es.idBefore(c.cursor)
	return true
}

func (es *EventSource) unregister(c *client) {
	es.mu.Lock()
	defer es.mu.Unlock()
	delete(es.clients, c)
	if c.bit != 0 {
		es.removeFilter(c.bit)
	}
	es.stats.sentGone.Add(c.sent.Load())
	if es.closed && len(es.clients) == 0 {
		select {
		case <-es.drained:
		default:
			close(es.drained)
		}
	}
}
