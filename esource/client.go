package esource

import (
	"cmp"
	"context"
	"errors"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// maxBatch bounds the bytes a client sends in one write, so that a stalled
// client pins little of the log and a busy one flushes often; maxBatchBufs
// bounds the buffers, whose slice headers and I/O vectors a client keeps
// for its next write.
const (
	maxBatch     = 64 << 10
	maxBatchBufs = 128
)

// A sink is where a client's bytes go: an HTTP response, or a Tee iterator.
type sink interface {
	// write sends bufs, in order, and flushes them.
	write(bufs [][]byte) error
	// abort makes a pending or future write fail soon. It may be called
	// from any goroutine.
	abort()
}

// A goneWatcher is a sink that can tell when its client goes away while
// nothing is written to it: watchGone calls cancel then, until the returned
// func is called, which stops watching and reports whether it did.
type goneWatcher interface {
	watchGone(cancel func()) (stop func() bool)
}

var errClientGone = errors.New("esource: client went away")

// A client is one subscriber: a cursor into the log, and the sink that its
// single writer goroutine (the caller of run) writes to.
type client struct {
	es     *EventSource
	sink   sink
	cursor uint64  // seq of the next event to send
	lastID string  // ID of the last event sent with one
	resume resumer // with an Ordering: the position whose events it skips (see handoff.go)
	bufs   [][]byte
	filter Filter // the events it receives; nil for all
	bit    uint64 // filter's bit in the entries' pass sets; 0 if it has none
	inWave bool   // woken by the last wake, and not yet waiting again (see EventSource.wakeClients)

	progress   string        // ID of the last event skipped, if the browser is behind it
	progressAt time.Duration // when the client was last sent a progress frame (see EventSource.since)
	sent       atomic.Uint64 // bytes written, for Stats
	closed     func() bool   // reports, without blocking, that the client closed its connection; nil if it cannot tell
	heartbeat  time.Duration // how often an idle client is sent a comment; 0 for never (a part of a merged stream, a Tee)

	wroteAt       time.Duration   // when it was last written to, for its heartbeat (see EventSource.since)
	probeAt       time.Duration   // when its connection is next looked at, if closed is set
	tick          <-chan struct{} // the wheel's channel for its next deadline, until it is closed
	progressTimer *time.Timer     // for a filtered client: when to look at the log for progress
	pooled        *[][]byte       // the pool's entry bufs belong to, while it holds one
	end           func()          // ends the stream once served, if it has a goroutine of its own (see loop)
}

// run serves c, from start, until ctx ends, the sink fails, or the
// EventSource shuts down.
func (c *client) run(ctx context.Context, start Start) error {
	if !c.es.register(c) {
		return ErrClosed
	}
	defer c.es.unregister(c)
	return c.serve(ctx, start)
}

// serve is run for a client that is registered already, from start: the
// first event published after registration, after start's event, or
// after its gap.
func (c *client) serve(ctx context.Context, start Start) error {
	es := c.es
	switch {
	case start.resumes():
		es.mu.RLock()
		seq, skip, ok := es.joinPoint(start.LastEventID, start.Position)
		es.mu.RUnlock()
		c.lastID = start.LastEventID
		if ok {
			c.cursor, c.resume.skip = seq, skip
		} else if err := c.catchUp(ctx, false, start.Position); err != nil {
			return err
		}
	case start.Gap != nil:
		if err := c.sendGap(*start.Gap); err != nil {
			return err
		}
	}
	c.progressAt = es.since()
	c.probeAt = c.progressAt + es.cfg.probe
	return c.loop(ctx, wokeNot)
}

// errMoved ends the goroutine that served a client which moved to a fresh
// one (see client.loop).
var errMoved = errors.New("esource: the stream moved to another goroutine")

// A wakeup is why a waiting client woke.
type wakeup uint8

const (
	wokeNot    wakeup = iota // it did not wait
	wokeEvents               // its wake channel: events were published
	wokeTick                 // its deadline on the wheel: a heartbeat or a probe may be due
	wokeOther                // shutdown, a progress frame due, or its context ended
)

// A wait is what a waiting client waits for, besides its context.
type wait struct {
	wake     <-chan struct{}
	tick     <-chan struct{}
	progress <-chan time.Time
}

// loop serves c from where it stands, after the wakeup woke, until ctx
// ends, the sink fails, or the EventSource shuts down.
//
// A client whose stream has a goroutine of its own (c.end is set) waits
// on a fresh goroutine when it goes to wait idle: first, and after
// anything but new events woke it (its deadline on the wheel, say). The
// fresh goroutine's small stack is then all it holds while it waits,
// where the old one grew in writes; loop returns errMoved, and the new
// goroutine ends the stream. A client that keeps up with the events
// waits where it is, at no cost.
func (c *client) loop(ctx context.Context, woke wakeup) (err error) {
	es := c.es
	defer func() {
		if errors.Is(err, errMoved) {
			return
		}
		c.release()
		if c.progressTimer != nil {
			c.progressTimer.Stop()
		}
		if c.inWave {
			es.leaveWave() // it will write no more: the wave goes on without it
		}
	}()
	idle := woke != wokeEvents
	for {
		if err := c.wakeUp(ctx, woke); err != nil {
			return err
		}
		woke = wokeNot

		es.mu.RLock()
		wake, closed, head := es.wake, es.closed, es.head
		if c.bit != 0 {
			wake = es.filters[bits.TrailingZeros64(c.bit)].wake
		}
		behind := c.cursor < head && !c.skipEvicted()
		if !behind {
			c.collect()
		}
		sleeping := c.bit != 0 && c.cursor == es.next // woken for its events only
		es.mu.RUnlock()

		switch {
		case behind:
			es.stats.slow.Add(1)
			if err := c.catchUp(ctx, true, es.position(c.lastID)); err != nil {
				return err
			}
			continue
		case len(c.bufs) > 0:
			err := c.write(c.bufs)
			clear(c.bufs)
			c.resume.reset()
			if err != nil {
				return err
			}
			continue
		case closed:
			return c.write([][]byte{retryLine(jitter(es.cfg.drainRetry))})
		}

		if c.inWave {
			c.inWave = false
			es.leaveWave()
		}
		c.release() // buffers only while writing
		w := wait{wake: wake, tick: c.deadline(), progress: c.progressWake(sleeping)}
		if c.bit == 0 {
			es.waiting.Add(1)
		}
		if idle && c.end != nil {
			go c.moved(ctx, w)
			return errMoved
		}
		woke = c.await(ctx, w)
		idle = woke != wokeEvents
	}
}

// moved is where a client that moved to a fresh goroutine waits (see
// loop): its few frames are all that stack holds meanwhile, so that the
// runtime starts goroutines, and these, with small stacks.
func (c *client) moved(ctx context.Context, w wait) {
	if err := c.loop(ctx, c.await(ctx, w)); !errors.Is(err, errMoved) {
		c.end()
	}
}

// await waits for w or ctx, and tells which woke it. Shutdown wakes the
// clients through their wake channels.
func (c *client) await(ctx context.Context, w wait) wakeup {
	var woke wakeup
	select {
	case <-w.wake:
		woke = wokeEvents
	case <-w.tick:
		woke = wokeTick
	case <-w.progress:
		woke = wokeOther
	case <-ctx.Done():
		woke = wokeOther
	}
	if c.bit == 0 {
		c.es.waiting.Add(-1)
		c.inWave = woke == wokeEvents
	}
	return woke
}

// wakeUp does what is due when c wakes: at its deadline, the probe of its
// connection and its heartbeat; when its context ended, the end of its
// stream.
func (c *client) wakeUp(ctx context.Context, woke wakeup) error {
	switch woke {
	case wokeTick:
		c.tick = nil
		now := c.es.since()
		if c.closed != nil && now >= c.probeAt {
			if c.closed() {
				return errClientGone
			}
			c.probeAt = now + c.es.cfg.probe
		}
		if c.heartbeat > 0 && now-c.wroteAt >= c.heartbeat {
			return c.write([][]byte{heartbeatLine})
		}
	case wokeOther:
		if err := ctx.Err(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				c.finish()
			}
			return err
		}
	}
	return nil
}

// deadline returns the wheel's channel for c's next deadline: its next
// probe, or its heartbeat; nil if it has neither. The channel is kept
// until it is closed, though a write moves the heartbeat on (see wheel).
func (c *client) deadline() <-chan struct{} {
	if c.tick != nil {
		return c.tick
	}
	es := c.es
	due, ok := nextDue(c.closed != nil && es.cfg.probe > 0, es.epoch.Add(c.probeAt), c.heartbeat, es.epoch.Add(c.wroteAt))
	if !ok {
		return nil
	}
	c.tick = es.wheel.at(due)
	return c.tick
}

// progressWake returns a channel that fires when c, a filtered client, is
// due to look at the log for a progress frame: when one is pending, or,
// while it sleeps (it is not woken for the events it skips), once a
// progress interval. It returns nil for other clients.
func (c *client) progressWake(sleeping bool) <-chan time.Time {
	if c.progress == "" && !sleeping {
		return nil
	}
	d := c.es.cfg.progress
	if c.progress != "" {
		_, d = c.progressDue(c.es.since())
	}
	if d <= 0 {
		return nil
	}
	if c.progressTimer == nil {
		c.progressTimer = time.NewTimer(d)
	} else {
		c.progressTimer.Reset(d)
	}
	return c.progressTimer.C
}

// release returns c's batch buffers to the EventSource's pool: an idle
// client holds none.
func (c *client) release() {
	if c.pooled != nil {
		*c.pooled = c.bufs[:0]
		c.es.bufs.put(c.pooled)
		c.pooled, c.bufs = nil, nil
	}
}

// skipEvicted moves a filtered client that slept past the head of the
// log (it is woken only for the events it is sent) to the head, and
// reports true, if none of the events evicted since its cursor was one it
// is sent: it is not behind. The last of them becomes its progress, told
// once due. es.mu must be held, at least for reading.
func (c *client) skipEvicted() bool {
	es := c.es
	if c.bit == 0 || c.resume.skip != nil || es.lostAll > c.cursor || es.filters[bits.TrailingZeros64(c.bit)].lost > c.cursor {
		return false
	}
	c.cursor = es.head
	if es.evicted.id != "" {
		c.lastID, c.progress = es.evicted.id, es.evicted.id
	}
	return true
}

// sendGap sends gap, with the ID of the event before the client's
// cursor: where its stream goes on.
func (c *client) sendGap(gap Gap) error {
	es := c.es
	es.mu.RLock()
	ev := gap.Event(es.idBefore(c.cursor))
	es.mu.RUnlock()
	wire, err := ev.appendWire(nil)
	if err != nil {
		return err
	}
	es.stats.gap(&ev)
	return c.write([][]byte{wire})
}

// finish writes, at the deadline of a client's context, one last batch of
// what the log holds for it, so that its stream ends after what was
// published by then. A client behind the log gets it when it resumes.
func (c *client) finish() {
	es := c.es
	es.mu.RLock()
	behind := c.cursor < es.head
	if !behind {
		c.collect()
	}
	es.mu.RUnlock()
	if !behind && len(c.bufs) > 0 {
		_ = c.sink.write(c.bufs)
		clear(c.bufs)
		c.resume.reset()
	}
	c.release()
}

// collect gathers into c.bufs the wire bytes of the events from c.cursor
// on, up to maxBatch bytes in maxBatchBufs buffers, and moves the cursor
// past them. Events c's filter skips are passed over, and when the last
// were skipped a progress frame with their ID ends the batch, if one is
// due. es.mu must be held, and c.cursor must not be behind the log.
func (c *client) collect() {
	if c.pooled == nil {
		c.pooled = c.es.bufs.get()
	}
	c.bufs = (*c.pooled)[:0]
	if c.bit != 0 && c.resume.skip == nil {
		c.collectIndexed()
	} else {
		c.collectAll()
	}
	if c.progress != "" {
		now := c.es.since()
		if due, _ := c.progressDue(now); due {
			c.bufs = append(c.bufs, progressLine(c.progress))
			c.progress, c.progressAt = "", now
		}
	}
}

// full reports whether c.bufs, holding n bytes, make a batch.
func (c *client) full(n int) bool {
	return n > 0 && (n >= maxBatch || len(c.bufs) >= maxBatchBufs)
}

// add appends wire, an event's bytes, to c.bufs, to the last buffer if it
// follows it in the same page.
func (c *client) add(wire []byte) {
	if k := len(c.bufs) - 1; k >= 0 && follows(c.bufs[k], wire) {
		c.bufs[k] = c.bufs[k][:len(c.bufs[k])+len(wire)]
	} else {
		c.bufs = append(c.bufs, wire)
	}
}

// collectIndexed collects for a client with a registered filter: it reads
// the filter's index of the log, and so visits the events it is sent, not
// all those it skips.
func (c *client) collectIndexed() {
	es := c.es
	index := es.filters[bits.TrailingZeros64(c.bit)].index
	k, _ := slices.BinarySearchFunc(index, c.cursor, func(x indexed, seq uint64) int { return cmp.Compare(x.seq, seq) })
	n := 0
	for ; k < len(index) && !c.full(n); k++ {
		x := &index[k]
		if x.seq > c.cursor {
			c.skipTo(x.seq)
		}
		n += len(x.wire)
		c.add(x.wire)
		if id := es.ring[x.seq%uint64(len(es.ring))].id; id != "" {
			c.lastID, c.progress = id, ""
		}
		c.cursor = x.seq + 1
	}
	if k == len(index) && c.cursor < es.next {
		c.skipTo(es.next)
	}
}

// skipTo moves c.cursor to seq over events it is not sent: the newest of
// them with an ID becomes its last ID, and its progress.
func (c *client) skipTo(seq uint64) {
	es := c.es
	for i := seq; i > c.cursor; i-- {
		if id := es.ring[(i-1)%uint64(len(es.ring))].id; id != "" {
			c.lastID, c.progress = id, id
			break
		}
	}
	c.cursor = seq
}

// collectAll collects by visiting every event from c.cursor on: for a
// client without a filter, one whose filter has no slot, or one still
// skipping what it received (c.resume, see handoff.go).
func (c *client) collectAll() {
	es := c.es
	n := 0
	// In locals, not in c, while the loop runs: a filtered client skips
	// most events, and each store of a string to c is a write barrier.
	lastID, progress := c.lastID, c.progress
	for ; c.cursor < es.next && !c.full(n); c.cursor++ {
		e := &es.ring[c.cursor%uint64(len(es.ring))]
		received, idLine := c.resume.step(e.pos)
		switch {
		case received:
			continue
		case idLine != nil:
			id := string(idOf(idLine))
			lastID, progress = id, id
			if c.passes(e) {
				rest := withoutID(e.wire, e.id)
				c.bufs = append(c.bufs, idLine, rest)
				n += len(idLine) + len(rest)
				progress = ""
			}
			continue
		}
		if !c.passes(e) {
			if e.id != "" {
				lastID, progress = e.id, e.id
			}
			continue
		}
		n += len(e.wire)
		c.add(e.wire)
		if e.id != "" {
			lastID, progress = e.id, ""
		}
	}
	c.lastID, c.progress = lastID, progress
}

// follows reports whether b starts where a ends, in the same page.
func follows(a, b []byte) bool {
	return len(b) > 0 && cap(a) > len(a) && &a[:len(a)+1][len(a)] == &b[0]
}

// catchUp serves a client whose position the log does not hold: one that
// resumes after an ID the log does not know, or one that fell behind the
// log. pos is the position of c.lastID, if it has one. It hands the
// client to the History hook, which replays up to the log; without a
// hook, or when the hook fails, the client is sent a gap event and
// continues with the oldest event the log holds (when it fell behind) or
// the first one published after it came (when its ID is unknown).
func (c *client) catchUp(ctx context.Context, behind bool, pos Position) error {
	es := c.es
	gap := Gap{Reason: "unknown-id", Message: "the event ID is not in the log and there is no history"}
	if behind {
		gap = Gap{Reason: "slow", Message: "the client fell behind the log"}
	}
	if h := es.cfg.history; h != nil && c.lastID != "" {
		joined, err := c.replay(ctx, h, pos)
		var sinkErr sinkError
		if errors.As(err, &sinkErr) {
			return sinkErr.err
		}
		if joined || ctx.Err() != nil {
			return ctx.Err()
		}
		gap = Gap{Reason: "history", Message: "the history could not replay the events"}
		var gapErr *GapError
		if errors.As(err, &gapErr) {
			gap.Reason, gap.Message = gapErr.Reason, gapErr.Message
		}
		if err != nil && (gapErr == nil || gapErr.Err != nil) {
			es.cfg.logger.Warn("esource: history could not serve a client",
				"lastEventId", Truncate(c.lastID), "err", err)
		}
	}

	es.mu.RLock()
	switch {
	case behind:
		gap.Missed = es.head - c.cursor
		c.cursor = es.head
	case c.cursor < es.head:
		// The hook took so long that what was published since the client
		// came is gone too.
		c.cursor = es.next
	}
	// The gap's ID is that of the event before the cursor, so that a
	// browser reconnecting after the gap resumes where the stream goes on.
	id := es.idBefore(c.cursor)
	es.mu.RUnlock()
	gap.LastEventID = Truncate(c.lastID)
	ev := gap.Event(id)
	wire, err := ev.appendWire(nil)
	if err != nil { // the ID came from the log, so it is valid
		return err
	}
	if id != "" {
		c.lastID = id
	}
	es.stats.gap(&ev)
	return c.write([][]byte{wire})
}

// replay runs the History hook for c, at pos, and reports whether c
// joined the log.
func (c *client) replay(ctx context.Context, h History, pos Position) (joined bool, err error) {
	es := c.es
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &Replay{c: c, cancel: cancel, last: c.lastID, lastPos: pos, resume: resumer{o: es.ordering, skip: pos}}
	es.mu.Lock()
	if seq, skip, ok := es.joinPoint(c.lastID, pos); ok {
		es.mu.Unlock()
		c.cursor, c.resume.skip = seq, skip
		return true, nil
	}
	es.catching[r] = struct{}{}
	es.mu.Unlock()
	es.stats.replays.Add(1)

	// The hook may wait long on its source: end it if the client goes.
	var gone func() bool
	if w, ok := c.sink.(goneWatcher); ok {
		gone = w.watchGone(cancel)
	}
	err = h.Replay(rctx, Start{LastEventID: c.lastID, Position: pos}, r)
	if gone != nil && gone() {
		err = errClientGone
	} else if ferr := r.Flush(); err == nil || errors.Is(err, ErrCaughtUp) {
		err = ferr
	}

	es.mu.Lock()
	delete(es.catching, r)
	joined = r.joined.Load()
	c.lastID = r.last
	if r.behind && r.last != "" {
		c.progress = r.last // told once due, by serve
	}
	if joined {
		c.cursor, c.resume.skip = r.joinAt, r.skip
	}
	es.mu.Unlock()
	if errors.Is(err, errClientGone) {
		err = sinkError{err}
	}
	var sinkErr sinkError
	switch {
	case errors.As(err, &sinkErr):
		return joined, sinkErr
	case joined:
		return true, nil
	case errors.Is(err, ErrCaughtUp) || errors.Is(err, context.Canceled) && ctx.Err() == nil:
		return false, nil
	}
	return false, err
}

var heartbeatLine = []byte(":\n\n")

func retryLine(d time.Duration) []byte {
	b := strconv.AppendInt([]byte("retry: "), d.Milliseconds(), 10)
	return append(b, '\n', '\n')
}

// jitter returns d scaled by a random factor in [0.5, 1.5).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}
