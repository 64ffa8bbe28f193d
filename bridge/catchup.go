package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/backoff"
)

// Catch-up: clients that resume from a position the log no longer holds
// ride a catch-up reader of the route, a broker reader shared by all the
// clients it can serve. It walks forward from where it was started (the
// position of the first client that needed it), holds the events it read,
// translated and encoded once, in a bounded ring, and each rider sends
// them from its cursor in the ring, skipping what it had received, until
// the route's log can serve it. A route has at most a few catch-up
// readers however many clients resume at once; a client that no reader
// can take waits, with heartbeats, for one to end.

// DefaultCatchUpReaders is how many catch-up readers a route may have at
// once when Options.CatchUpReaders is zero.
const DefaultCatchUpReaders = 4

// Bounds of a catch-up reader.
const (
	// catchUpEvents and catchUpBytes bound the events a catch-up reader
	// holds for its riders, however many they are.
	catchUpEvents = 1024
	catchUpBytes  = 8 << 20
	// aheadGrace is how long a client ahead of the live reader waits for
	// it, while the route is ready, before it rides a reader of its own.
	aheadGrace = 3 * time.Second
	// riderPatience is how long a catch-up reader whose ring is full waits
	// for its slowest rider before it goes on without it: the rider drops
	// off and is caught up again, by another reader.
	riderPatience = time.Second
	// rideBatch is how many events a rider takes from the ring at once.
	rideBatch = 64
	// catchUpLinger is how long a rider that sent all its reader had read
	// waits for rideBatch events more, while the reader reads, before it
	// writes what it sent.
	catchUpLinger = time.Millisecond
	// openAttempts is how many times in a row a catch-up reader tries to
	// open while the route's live reader is open (so the broker answers)
	// before it gives up: its riders get a gap, and its slot is free.
	openAttempts = 5
)

// errDroppedOff tells a rider that its reader went on without it.
var errDroppedOff = errors.New("bridge: too slow for the catch-up reader")

// errAhead is the answer to a client whose position the broker never
// issued.
var errAhead = &esource.GapError{Reason: "ahead", Message: "the event ID is beyond the head of the stream"}

// errBadPosition is the answer to a client whose position the source
// says it can never open (ErrBadPosition).
var errBadPosition = &esource.GapError{Reason: gapShape.Reason, Message: gapShape.Message}

// errStreamReset tells a client that its position is of an earlier
// incarnation of the stream: Replay sends it a gap and the new stream.
var errStreamReset = errors.New("bridge: position of an earlier incarnation of the stream")

// catchUps holds a route's catch-up readers.
type catchUps struct {
	r        *route
	max      int
	events   int           // catchUpEvents, but in tests
	patience time.Duration // riderPatience, but in tests

	mu      sync.Mutex
	readers map[*catchUp]struct{}
	changed chan struct{} // closed and replaced when a reader opens or ends
	wg      sync.WaitGroup
	waiting atomic.Int32 // clients waiting for a reader, for Stats
}

// A catchUp is one catch-up reader and its riders.
type catchUp struct {
	cs     *catchUps
	ctx    context.Context // ends when the last rider leaves
	cancel context.CancelFunc

	mu      sync.Mutex
	ring    []caught      // event seq is at ring[seq%len(ring)]
	head    uint64        // seq of the oldest event held
	next    uint64        // seq of the next event
	size    int           // bytes held
	from    *eventID      // where the reader stood before the oldest event held
	grew    chan struct{} // closed and replaced when the ring reaches wake
	wake    uint64        // the seq after which riders wait on grew; 0 for none
	moved   chan struct{} // closed and replaced when a rider moves on, if awaited
	awaited bool          // the reader waits on moved
	riders  map[*rider]struct{}
	err     error // why the reader stopped, once it has
	done    bool  // no rider left: it takes no more
	opened  bool  // the source opened: until then it takes riders at its own start only
}

// A caught event is an event read by a catch-up reader.
type caught struct {
	ev      esource.Encoded
	at      *eventID // the position after it, and its partition
	expired *ExpiredError
}

// A rider is a client riding a catchUp.
type rider struct {
	cursor uint64 // seq of the next event to send; guarded by catchUp.mu
}

func newCatchUps(r *route, max int) *catchUps {
	return &catchUps{r: r, max: max, events: catchUpEvents, patience: riderPatience,
		readers: make(map[*catchUp]struct{}), changed: make(chan struct{})}
}

// ride sends the client rp the events after pos, the decoded position of
// its last event ID, from catch-up readers, until the route's log serves
// it (esource.ErrCaughtUp) or ctx ends.
//
// A client ahead of the live reader in some partitions boards no reader but
// one started at its own position, which the source checks: a position the
// broker never issued must not ride, for good, a reader others share.
func (cs *catchUps) ride(ctx context.Context, rp *esource.Replay, pos *eventID, ahead bool) error {
	last := pos
	for {
		c, rd, err := cs.board(ctx, rp, last, ahead)
		if err != nil {
			return err
		}
		last, err = c.ride(ctx, rp, rd, last)
		c.leave(rd)
		if pos.heal && !last.heal {
			l := *last // maybe the reader's own
			l.heal, last = true, &l
		}
		if !errors.Is(err, errDroppedOff) {
			return err
		}
	}
}

// board finds a reader that can take a client at pos (unless it must have
// its own), or starts one, waiting with heartbeats while the route has as
// many as it may.
func (cs *catchUps) board(ctx context.Context, rp *esource.Replay, pos *eventID, own bool) (*catchUp, *rider, error) {
	for {
		cs.mu.Lock()
		for c := range cs.readers {
			if own {
				break
			}
			if rd := c.admit(pos); rd != nil {
				cs.mu.Unlock()
				return c, rd, nil
			}
		}
		if len(cs.readers) < cs.max {
			c, rd := cs.start(pos)
			cs.mu.Unlock()
			return c, rd, nil
		}
		changed := cs.changed
		cs.mu.Unlock()
		cs.waiting.Add(1)
		err := rp.Wait(ctx, changed)
		cs.waiting.Add(-1)
		if err != nil {
			return nil, nil, err
		}
	}
}

// start starts a reader at pos, with a rider there. cs.mu must be held.
func (cs *catchUps) start(pos *eventID) (*catchUp, *rider) {
	c := &catchUp{
		cs:     cs,
		ring:   make([]caught, cs.events),
		from:   pos,
		grew:   make(chan struct{}),
		moved:  make(chan struct{}),
		riders: make(map[*rider]struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(cs.r.ctx)
	rd := &rider{}
	c.riders[rd] = struct{}{} // before the reader reads: it waits for this one
	cs.readers[c] = struct{}{}
	cs.wg.Go(func() {
		c.run(pos)
		cs.mu.Lock()
		delete(cs.readers, c)
		cs.signalChanged()
		cs.mu.Unlock()
	})
	return c, rd
}

// signalChanged wakes the clients waiting for a reader. cs.mu must be
// held.
func (cs *catchUps) signalChanged() {
	close(cs.changed)
	cs.changed = make(chan struct{})
}

// admit makes a rider at pos of c, if c has read nothing that follows pos
// but what it still holds. Until the source opened, c takes riders at its
// own start only: a position that decodes but cannot be opened must not
// hold clients at other positions.
func (c *catchUp) admit(pos *eventID) *rider {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done || pos.inc != c.from.inc || !covers(pos.pos, c.from.pos) || !c.opened && !pos.samePosition(c.from) {
		return nil
	}
	rd := &rider{cursor: c.head}
	c.riders[rd] = struct{}{}
	return rd
}

// leave removes rd; the last rider to leave ends the reader.
func (c *catchUp) leave(rd *rider) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.riders, rd)
	c.signalMoved()
	if len(c.riders) == 0 {
		c.done = true
		c.cancel()
	}
}

// signalMoved wakes the reader if it waits for riders. c.mu must be held.
func (c *catchUp) signalMoved() {
	if c.awaited {
		close(c.moved)
		c.moved, c.awaited = make(chan struct{}), false
	}
}

// run reads the source from pos on until its riders are gone, reopening
// after errors, and holds what it reads for them.
func (c *catchUp) run(pos *eventID) {
	r := c.cs.r
	start := startAt(slices.Clone(pos.pos))
	if pos.kind == kindOrigin {
		start = Start{Earliest: true}
	}
	at := slices.Clone(start.Position)
	var retry backoff.Backoff
	failed := 0 // attempts to open in a row that failed while the route was ready
	for c.ctx.Err() == nil {
		rd, err := r.src.Open(c.ctx, start)
		var exp *ExpiredError
		switch {
		case errors.As(err, &exp):
			c.add(caught{expired: exp})
			start, at = startAt(exp.Resume), slices.Clone(exp.Resume)
			continue
		case errors.Is(err, ErrAhead):
			c.stop(errAhead)
			return
		case errors.Is(err, ErrBadPosition) || errors.Is(err, ErrNoHistory):
			c.stop(errBadPosition)
			return
		case err != nil && c.ctx.Err() == nil:
			if r.isReady() {
				failed++
			}
			if failed >= openAttempts {
				// The broker serves the live reader, but not this one:
				// its riders are told, rather than held for good.
				c.stop(&esource.GapError{Reason: "history", Message: "the broker could not replay from this position", Err: err})
				return
			}
			r.logger.Warn("catch-up reader cannot open; retrying", "route", r.path, "err", err)
			retry.Wait(c.ctx)
			continue
		case err != nil:
			continue
		}
		retry.Reset()
		failed = 0
		c.setOpened()
		inc := incarnationTag(incarnationOf(rd))
		if pos.inc != 0 && inc != 0 && inc != pos.inc {
			rd.Close()
			c.stop(errStreamReset) // its riders go on with the new stream
			return
		}
		if start.Earliest {
			at = rd.Position() // every partition's first offset
		}
		at, err = c.follow(rd, at, inc)
		rd.Close()
		switch {
		case c.ctx.Err() != nil:
		case errors.Is(err, ErrReset):
			c.stop(errStreamReset)
			return
		case errors.As(err, &exp):
			c.add(caught{expired: exp})
			start, at = startAt(exp.Resume), slices.Clone(exp.Resume)
		default:
			r.logger.Warn("catch-up reader failed; reopening", "route", r.path, "err", err)
			start = Start{Position: at}
			retry.Wait(c.ctx)
		}
	}
	c.stop(c.ctx.Err())
}

// follow adds rd's messages to the ring until it fails, and returns the
// position after the last one. inc is the tag of rd's incarnation.
func (c *catchUp) follow(rd Reader, pos Position, inc uint16) (Position, error) {
	r := c.cs.r
	ids := idEncoder{c: r.codec()}
	ids.c.inc = inc
	var s slab
	for {
		m, err := rd.Next(c.ctx)
		if err != nil {
			return pos, err
		}
		pos = advance(pos, &m)
		at := s.eventID()
		*at = eventID{kind: kindPosition, inc: inc, partition: m.Partition, pos: s.position(pos)}
		if len(pos) > 1 {
			at.kind = kindEvent
		}
		ev, err := s.encode(r.tr.event(s.string(ids.append(pos, m.Partition)), &m, &s), at)
		if err != nil {
			r.logger.Error("message cannot be sent", "route", r.path, "id", ev.ID(), "err", err)
			continue
		}
		if !c.add(caught{ev: ev, at: at}) {
			return pos, c.ctx.Err()
		}
	}
}

// add appends e to the ring, first making room: it drops the events every
// rider has sent, and waits for the slowest rider, up to riderPatience,
// before it drops events that rider has not sent. It reports false if the
// riders are gone.
func (c *catchUp) add(e caught) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var patience *time.Timer
	impatient := false
	for c.next > c.head && (c.next-c.head == uint64(len(c.ring)) || c.size+e.ev.Len() > catchUpBytes) {
		slowest := c.next
		for rd := range c.riders {
			if rd.cursor >= c.head { // the others have dropped off
				slowest = min(slowest, rd.cursor)
			}
		}
		switch {
		case slowest > c.head:
			c.evict(slowest)
			continue
		case impatient:
			c.evict(c.head + 1) // the slowest drop off
			continue
		case patience == nil:
			patience = time.NewTimer(c.cs.patience)
			defer patience.Stop()
		}
		moved := c.moved
		c.awaited = true
		if c.wake != 0 {
			// Riders waiting for a batch more get what there is: the
			// ring holds no more for now.
			c.signalGrew()
		}
		c.mu.Unlock()
		select {
		case <-moved:
		case <-patience.C:
			impatient = true
		case <-c.ctx.Done():
			c.mu.Lock()
			return false
		}
		c.mu.Lock()
	}
	c.ring[c.next%uint64(len(c.ring))] = e
	c.next++
	c.size += e.ev.Len()
	if c.wake != 0 && c.next >= c.wake {
		// Only riders that sent all there was wait, each for as many
		// events as it asked for: the reader makes no channel per event.
		c.signalGrew()
	}
	return true
}

// signalGrew wakes the riders waiting for the ring to grow. c.mu must be
// held.
func (c *catchUp) signalGrew() {
	close(c.grew)
	c.grew, c.wake = make(chan struct{}), 0
}

// evict drops the events before seq. c.mu must be held.
func (c *catchUp) evict(seq uint64) {
	for ; c.head < seq; c.head++ {
		e := &c.ring[c.head%uint64(len(c.ring))]
		if e.at != nil {
			c.from = e.at
		}
		c.size -= e.ev.Len()
		*e = caught{}
	}
}

// setOpened lets c take riders at any position it can serve, and wakes
// the clients waiting for a reader.
func (c *catchUp) setOpened() {
	c.mu.Lock()
	opened := c.opened
	c.opened = true
	c.mu.Unlock()
	if !opened {
		c.cs.mu.Lock()
		c.cs.signalChanged()
		c.cs.mu.Unlock()
	}
}

// stop ends the reader with err, which its riders return once they have
// sent what it read.
func (c *catchUp) stop(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
	c.done = true
	c.signalGrew()
}

// ride sends rp what c reads after pos, from rd's cursor on, until the log
// takes the client over (esource.ErrCaughtUp), the client or the reader
// ends, or the client is too slow (errDroppedOff). It returns the
// client's position.
//
// Every event goes to rp as the reader met it: the Replay applies the
// hand-off rule (esource/handoff.go), skipping what the client has and
// sending with the client's own ID an event it stands past elsewhere.
func (c *catchUp) ride(ctx context.Context, rp *esource.Replay, rd *rider, pos *eventID) (*eventID, error) {
	r := c.cs.r
	var at *eventID // the reader's position after the last event sent
	batch := make([]caught, 0, rideBatch)
	var linger *time.Timer
	rp.Restart() // c's first events may be some the client has
	for {
		c.mu.Lock()
		if rd.cursor < c.head {
			c.mu.Unlock()
			return clientAt(pos, at), errDroppedOff
		}
		batch = batch[:0]
		for seq := rd.cursor; seq < c.next && len(batch) < cap(batch); seq++ {
			batch = append(batch, c.ring[seq%uint64(len(c.ring))])
		}
		grew, stopped := c.grew, c.err
		if len(batch) < cap(batch) && stopped == nil {
			// It may wait on grew: for the next event if it has none,
			// else for a batch more (see below).
			want := c.next + 1
			if len(batch) > 0 {
				want = c.next + rideBatch
			}
			if c.wake == 0 || want < c.wake {
				c.wake = want
			}
		}
		c.mu.Unlock()

		for _, e := range batch {
			var err error
			if e.expired != nil {
				client := clientAt(pos, at)
				if e.expired.Resume != nil && covers(client.pos, e.expired.Resume) {
					continue // the client had received what was lost
				}
				if pos.heal {
					return client, errSnapshotExpired
				}
				err = rp.Send(expiredGap(r.codec(), e.expired, e.expired.missedBy(client.pos), r.codec().position(client.pos)))
			} else {
				at = e.at
				err = rp.SendEncoded(e.ev)
			}
			if err != nil {
				return clientAt(pos, at), err
			}
		}
		c.mu.Lock()
		rd.cursor += uint64(len(batch))
		c.signalMoved()
		c.mu.Unlock()

		var err error
		switch {
		case len(batch) == cap(batch):
			continue // more to come: Replay flushes by itself when a batch is full
		case len(batch) > 0 && stopped == nil:
			// The reader is reading: wait a little for a batch more
			// before writing what was sent, so that a rider as fast as
			// its reader writes in large pieces, not a few events at a
			// time (a write, and a wake-up of its client, each).
			if linger == nil {
				linger = time.NewTimer(catchUpLinger)
				defer linger.Stop()
			} else {
				linger.Reset(catchUpLinger)
			}
			select {
			case <-grew:
				linger.Stop()
			case <-linger.C:
				err = rp.Flush()
			case <-ctx.Done():
				err = rp.Wait(ctx, nil) // flushes, and says why ctx ended
			}
		case len(batch) > 0:
			err = rp.Flush()
		case stopped != nil:
			err = stopped
		default:
			err = rp.Wait(ctx, grew)
		}
		if err != nil {
			return clientAt(pos, at), err
		}
	}
}

// clientAt returns where a client that resumed at start stands once it
// has been sent, or has skipped, a reader's events up to the position at
// (nil for none): past both in every partition.
func clientAt(start, at *eventID) *eventID {
	switch {
	case at == nil:
		return start
	case start.kind == kindOrigin || start.inc != at.inc:
		return at
	}
	return &eventID{kind: at.kind, inc: at.inc, partition: at.partition, pos: merge(slices.Clone(start.pos), at.pos)}
}

// Replay implements esource.History: the client rides the route's
// catch-up readers from its start, decoded at the door (see startOf),
// until it has caught up with the live log.
func (r *route) Replay(ctx context.Context, from esource.Start, rp *esource.Replay) error {
	pos, ok := from.Position.(*eventID)
	if !ok {
		return &esource.GapError{Reason: gapMalformedID.Reason, Message: gapMalformedID.Message}
	}
	var err error
	if cur := r.codec().inc; pos.inc != 0 && cur != 0 && pos.inc != cur {
		err = errStreamReset
	}
	for range 3 {
		if errors.Is(err, errStreamReset) {
			// A position of an earlier incarnation of the stream: the
			// client is told, and reads the new stream from its start.
			c := r.codec()
			if err := rp.Send(resetGap(c)); err != nil {
				return err
			}
			pos, err = &eventID{kind: kindOrigin, inc: c.inc, pos: Position{}}, nil
		}
		err = r.replayView(ctx, rp, pos)
		if !errors.Is(err, errStreamReset) {
			break
		}
	}
	if errors.Is(err, esource.ErrCaughtUp) || ctx.Err() != nil {
		return err
	}
	var gapErr *esource.GapError
	if !errors.As(err, &gapErr) {
		err = &esource.GapError{Reason: "history", Message: "the broker could not replay the events", Err: fmt.Errorf("route %s: %w", r.path, err)}
	}
	return err
}

// replay sends rp the events after pos from the catch-up readers.
func (r *route) replay(ctx context.Context, rp *esource.Replay, pos *eventID) error {
	ahead := false // of the live reader, in some partition
	if live := r.live.Load(); live != nil && !covers(*live, pos.pos) {
		ahead = true
		if covers(pos.pos, *live) {
			// Ahead of the live reader in every partition: this instance
			// lags another, and the log will soon serve the client, or
			// the position was never issued. Wait for the log first.
			if err := r.waitAhead(ctx, rp); !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
		}
	}
	return r.catchUps.ride(ctx, rp, pos, ahead)
}

// waitAhead waits, with heartbeats, for the live log to take over a client
// ahead of it, and returns context.DeadlineExceeded once the route has
// been ready for aheadGrace without that: the client then rides a reader
// of its own, which the source opens only at a position it issued.
func (r *route) waitAhead(ctx context.Context, rp *esource.Replay) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, aheadGrace)
		err := rp.Wait(wctx, nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || r.isReady() {
			return err
		}
	}
}
