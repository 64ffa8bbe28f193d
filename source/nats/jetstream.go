package nats

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/backoff"
)

const (
	// deleteTimeout bounds the deletion of a consumer.
	deleteTimeout = 2 * time.Second
	// createTimeout bounds the creation of a reader's consumer, which the
	// context of Open does not bound (see openStream), and the attempts
	// at re-creating it.
	createTimeout = 10 * time.Second
	// recreateTimeout bounds one attempt at re-creating a reader's
	// consumer. A request the cluster drops (one sent while it elects a
	// JetStream leader gets no answer) is then sent again within a
	// second, rather than waited for until createTimeout.
	recreateTimeout = time.Second
	// heartbeat is how often the server tells a reader's pull request is
	// still waiting. A consumer lost with no reconnect of its connection
	// (its server died while the connection is on another, or the server
	// deleted it as inactive) is re-created after two are missed.
	heartbeat = 500 * time.Millisecond
	// inactiveThreshold is how long the server keeps a consumer that no
	// pull request waits on (nats.go's default is 5 minutes): a consumer
	// that esbridge could not delete, because its connection was down or
	// the bridge stopped, is gone within seconds of its last pull request
	// (which waits up to 30 s). A reader that is not read for that long
	// loses its consumer, and gets a new one at its position when it is
	// read again, after two missed heartbeats.
	inactiveThreshold = 10 * time.Second
	// watchInterval is how often a reader reads the stream's info, to
	// notice the stream deleted or created again (see watch).
	watchInterval = time.Second
	// infoTimeout bounds a read of the stream's info.
	infoTimeout = 2 * time.Second
)

// A streamReader reads a JetStream stream through a consumer of its own,
// which keeps no state worth keeping on the server: an ephemeral, in
// memory, unacknowledged consumer of one replica, as nats.go's ordered
// consumer is, re-created at the next sequence whenever in doubt.
//
// Its goroutine run, which Close waits for, reads the consumer and hands
// each message to Next, and re-creates the consumer itself rather than
// through nats.go's ordered consumer, for two reasons measured on a
// 3-server cluster (TestCluster): the ordered consumer re-creates its
// consumer inside its Next, with one request waited for 10 s, which a
// cluster electing its JetStream leader (its server died) may drop, so
// that delivery stopped for 10 s; and a consumer lost with no reconnect
// was noticed only after two missed heartbeats of 5 s. run re-creates the
// consumer as soon as its connection reconnected (the session of [conn]
// ends, and with it run's wait for the next message), after a heartbeat
// was missed twice, after any error of the consumer, and when a consumer
// sequence is missing (a message lost on the way), each time at the
// sequence after the last message it handed over, with attempts of
// recreateTimeout each (see createSoon).
//
// Another goroutine watches the stream: a consumer whose stream is
// deleted and created again goes on reading the new stream from its old
// sequence, unaware.
type streamReader struct {
	src       *Source
	conn      *conn                    // the live or the replay connection
	live      bool                     // opened as the live reader, see liveStart
	prefix    string                   // of the consumer names: PREFIX_1, PREFIX_2... as run re-creates it
	inc       uint64                   // the stream's creation time, Unix nanoseconds: its incarnation
	cfg       jetstream.ConsumerConfig // of the consumers; create sets Name and OptStartSeq
	ctx       context.Context          // ends when the reader is closed
	cancel    context.CancelFunc
	c         chan streamResult // unbuffered: run holds at most one message
	exited    chan struct{}     // closed when run returns
	reset     chan struct{}     // closed by watch: the stream was deleted or created again
	resetOnce sync.Once
	watched   chan struct{} // closed when watch returns
	close     sync.Once

	// Owned by run (and by newStreamReader before run starts).
	serial   int                       // of the consumer: PREFIX_SERIAL
	cons     jetstream.Consumer        // the consumer, nil while there is none
	it       jetstream.MessagesContext // its messages
	session  context.Context           // ends when conn reconnects after cons was created
	dseq     uint64                    // consumer sequence of the last message of cons
	sent     uint64                    // the sequence after the last message handed to Next
	deleting sync.WaitGroup            // deletions of replaced consumers

	// Owned by the goroutine calling Next.
	next    uint64 // sequence of the next message to return
	pending uint64 // messages pending for the consumer after the last one
	err     error  // the reader's final error
}

// A streamResult is what run hands to Next: a message and its metadata,
// or the error that ended run.
type streamResult struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	err  error
}

// openStream opens a reader on the live connection, for the route's live
// reader (start.Live), or on the replay one. It creates the reader's consumer in a goroutine, under a
// context of its own, so that the consumer is deleted whenever Open's ctx
// ends: a consumer created under ctx might be made on the server after
// ctx ended, with nothing left to delete it. If ctx ends first, Open
// returns ctx's error at once, and the goroutine deletes the consumer once
// made (the Source's Close waits for it).
func (s *Source) openStream(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	if start.Position != nil && len(start.Position) != 1 {
		return nil, fmt.Errorf("nats: stream %s: position of %d partitions, want 1: %w", s.cfg.Stream, len(start.Position), bridge.ErrBadPosition)
	}
	live := start.Live
	c := s.replay
	if live {
		c = s.live
	}
	if err := c.unavailable(); err != nil {
		return nil, err
	}
	st, err := c.js.Stream(ctx, s.cfg.Stream) // the stream's info: creates nothing
	if err != nil {
		return nil, fmt.Errorf("nats: stream %s: %w: %w", s.cfg.Stream, bridge.ErrUnavailable, err)
	}
	info := st.CachedInfo()
	s.sawStream(info)
	state := info.State
	// Start by sequence even for the latest message, rather than with
	// DeliverNewPolicy, so that Position is exact: nothing stored after
	// the stream info was read is skipped.
	next := state.LastSeq + 1
	switch {
	case start.Position != nil:
		next = start.Position[0]
		if next == 0 {
			return nil, fmt.Errorf("nats: stream %s: sequence 0 is not a position: %w", s.cfg.Stream, bridge.ErrBadPosition)
		}
		if next > state.LastSeq+1 {
			return nil, fmt.Errorf("nats: stream %s: sequence %d, the last is %d: %w", s.cfg.Stream, next, state.LastSeq, bridge.ErrAhead)
		}
		if next < state.FirstSeq {
			exp := &bridge.ExpiredError{
				Resume: bridge.Position{state.FirstSeq},
				From:   bridge.Position{next},
				Lost:   fmt.Sprintf("nats: stream %s: sequences %d to %d deleted", s.cfg.Stream, next, state.FirstSeq-1),
			}
			if s.cfg.Subject == "" { // else some were other subjects'
				exp.Missed = state.FirstSeq - next
			}
			return nil, exp
		}
	case start.Earliest:
		next = max(state.FirstSeq, 1)
	}
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: s.inactive,
		Replicas:          1,
		MemoryStorage:     true,
		FilterSubject:     s.cfg.Subject,
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("nats: %w", nats.ErrConnectionClosed)
	}
	s.opening.Add(1)
	s.mu.Unlock()
	type opened struct {
		r   *streamReader
		err error
	}
	res := make(chan opened) // unbuffered: a reader is either taken or closed
	go func() {
		defer s.opening.Done()
		r, err := s.newStreamReader(c, cfg, next, live, uint64(info.Created.UnixNano()))
		select {
		case res <- opened{r, err}:
		case <-ctx.Done():
			if r != nil {
				r.Close()
			}
		}
	}()
	select {
	case o := <-res:
		if o.err != nil {
			return nil, fmt.Errorf("nats: stream %s: consumer: %w: %w", s.cfg.Stream, bridge.ErrUnavailable, o.err)
		}
		return o.r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// newStreamReader creates the first consumer of cfg, at next, under a
// context of its own, and starts reading it. If that fails, it deletes
// the consumer, which may have been made on the server all the same.
func (s *Source) newStreamReader(c *conn, cfg jetstream.ConsumerConfig, next uint64, live bool, inc uint64) (*streamReader, error) {
	r := &streamReader{src: s, conn: c, live: live, inc: inc, cfg: cfg,
		// Named by us, so that a consumer whose creation failed or was
		// given up can still be deleted.
		prefix: "esbridge-" + rand.Text(), serial: 1, next: next, sent: next,
		c: make(chan streamResult), exited: make(chan struct{}), reset: make(chan struct{}), watched: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	if err := r.createSoon(ctx); err != nil {
		// The request may have reached the server and made the
		// consumer after all (a timeout), or been refused (which costs
		// this delete a round trip).
		s.deleteConsumer(c, r.name())
		return nil, err
	}
	if info := r.cons.CachedInfo(); info != nil {
		r.pending = info.NumPending
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	go r.watch()
	return r, nil
}

// name returns the name of the reader's consumer: PREFIX_SERIAL.
func (r *streamReader) name() string { return r.prefix + "_" + strconv.Itoa(r.serial) }

// create creates the consumer r.name() at r.sent and starts its
// messages, under ctx. The session of the connection is taken first, so
// that a reconnect during the creation ends it. Creating a consumer of
// the same name and configuration again is harmless: create may be tried
// again after a timeout.
func (r *streamReader) create(ctx context.Context) error {
	session := r.conn.session()
	cfg := r.cfg
	cfg.Name, cfg.OptStartSeq = r.name(), r.sent
	cons, err := r.conn.js.CreateOrUpdateConsumer(ctx, r.src.cfg.Stream, cfg)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(heartbeat), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return err
	}
	r.cons, r.it, r.session, r.dseq = cons, it, session, 0
	return nil
}

// createSoon creates the consumer, one attempt of recreateTimeout after
// another while the error is transient, until ctx ends.
func (r *streamReader) createSoon(ctx context.Context) error {
	retry := backoff.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for {
		actx, cancel := context.WithTimeout(ctx, recreateTimeout)
		err := r.create(actx)
		cancel()
		if err == nil || !transient(err) {
			return err
		}
		r.src.log.Debug("nats: creating the consumer: trying again", "conn", r.conn.role, "stream", r.src.cfg.Stream,
			"consumer", r.name(), "err", err)
		if !retry.Wait(ctx) {
			return err
		}
	}
}

// transient reports whether err, of a JetStream API request, may soon go
// away by itself: no answer in time, no one to answer, or a server that is
// not ready (status 503), as while the cluster elects a leader.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.As(err, &apiErr) && apiErr.Code == 503
}

// deleteConsumer deletes the consumer name of the stream through c, unless
// c is down: the server then deletes it after inactiveThreshold.
func (s *Source) deleteConsumer(c *conn, name string) {
	if !c.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	if err := c.js.DeleteConsumer(ctx, s.cfg.Stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Debug("nats: delete consumer", "conn", c.role, "stream", s.cfg.Stream, "consumer", name, "err", err)
	}
}

// errReconnected ends the reading of a consumer when its connection
// reconnected.
var errReconnected = errors.New("reconnected")

// run hands the consumer's messages to Next, re-creating the consumer when
// it fails, until the reader is closed, the stream is gone or another
// one, or re-creating the consumer failed for createTimeout; then it
// deletes the consumer.
func (r *streamReader) run() {
	defer close(r.exited)
	defer func() {
		r.drop(false)
		r.deleting.Wait()
	}()
	for {
		err := r.follow()
		if r.ctx.Err() != nil {
			return
		}
		r.src.log.Debug("nats: re-creating the consumer", "conn", r.conn.role, "stream", r.src.cfg.Stream,
			"consumer", r.name(), "sequence", r.sent, "err", err)
		r.drop(true)
		r.serial++
		if err = r.recreate(); err != nil {
			if r.ctx.Err() == nil && !errors.Is(err, bridge.ErrReset) {
				select {
				case r.c <- streamResult{err: err}:
				case <-r.ctx.Done():
				}
			}
			return
		}
	}
}

// follow hands the consumer's messages to Next until the reader is closed
// (it returns nil), the connection reconnected (errReconnected), or the
// consumer fails. A message it holds when it returns is read again from
// the next consumer.
func (r *streamReader) follow() error {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	defer context.AfterFunc(r.session, cancel)()
	for {
		m, err := r.it.Next(jetstream.NextContext(ctx))
		switch {
		case r.ctx.Err() != nil:
			return nil
		case r.session.Err() != nil:
			return errReconnected
		case err != nil:
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		if meta.Sequence.Consumer != r.dseq+1 {
			return fmt.Errorf("consumer sequence %d after %d: a message was lost", meta.Sequence.Consumer, r.dseq)
		}
		r.dseq = meta.Sequence.Consumer
		select {
		case r.c <- streamResult{msg: m, meta: meta}:
			r.sent = meta.Sequence.Stream + 1
		case <-ctx.Done():
			if r.ctx.Err() != nil {
				return nil
			}
			return errReconnected
		}
	}
}

// drop stops the consumer's messages and deletes it: in the background if
// async (its server may be gone: run does not wait for that), else at
// once. It deletes it by name, whether or not its creation succeeded.
func (r *streamReader) drop(async bool) {
	if r.it != nil {
		r.it.Stop()
	}
	r.cons, r.it = nil, nil
	name := r.name()
	if !async {
		r.src.deleteConsumer(r.conn, name)
		return
	}
	r.deleting.Go(func() { r.src.deleteConsumer(r.conn, name) })
}

// recreate creates the next consumer at r.sent (see createSoon) for up to
// createTimeout, then reads the stream's info: a consumer created on
// another stream of the same name (the stream was deleted and created
// again) would read it from the old sequence. It returns an error
// wrapping bridge.ErrReset, and closes r.reset, if the stream is gone or
// another one.
func (r *streamReader) recreate() error {
	ctx, cancel := context.WithTimeout(r.ctx, createTimeout)
	defer cancel()
	err := r.createSoon(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		r.resetOnce.Do(func() { close(r.reset) })
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) || err == nil && r.checkStream() {
		return fmt.Errorf("nats: stream %s: %w", r.src.cfg.Stream, bridge.ErrReset)
	}
	if err != nil {
		return fmt.Errorf("re-creating the consumer at sequence %d: %w", r.sent, err)
	}
	return nil
}

// watch follows the source's reads of the stream's info (one every
// watchInterval for all its readers, see Source.streamCheck) until the
// reader is closed, and closes r.reset once the stream is gone or another
// one.
func (r *streamReader) watch() {
	defer close(r.watched)
	check := &r.src.streamCheck
	defer check.Watch(r.src.readStream(r.conn))()
	for {
		info, ok := check.Next(r.ctx)
		if !ok {
			return
		}
		if r.gone(info) {
			r.resetOnce.Do(func() { close(r.reset) })
			return
		}
	}
}

// A streamInfo is what a read of the stream's info told.
type streamInfo struct {
	created uint64 // the stream's creation time, Unix nanoseconds; 0 if unknown
	gone    bool   // the stream does not exist
}

// readStream returns the check that reads the info of the source's stream
// over c, and records its subjects (see StreamSubjects). An error of the
// connection tells nothing: neither created nor gone.
func (s *Source) readStream(c *conn) func(context.Context, streamInfo) streamInfo {
	return func(ctx context.Context, _ streamInfo) streamInfo {
		ctx, cancel := context.WithTimeout(ctx, infoTimeout)
		defer cancel()
		st, err := c.js.Stream(ctx, s.cfg.Stream)
		var info streamInfo
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			info.gone = true
		case err == nil:
			si := st.CachedInfo()
			s.sawStream(si)
			info.created = uint64(si.Created.UnixNano())
		}
		return info
	}
}

// checkStream reads the stream's info. It closes r.reset and reports true
// if the stream is gone or another one. An error of the connection tells
// nothing.
func (r *streamReader) checkStream() bool {
	info := r.src.readStream(r.conn)(r.ctx, streamInfo{})
	gone := r.gone(info)
	if gone {
		r.resetOnce.Do(func() { close(r.reset) })
	}
	return gone
}

// gone reports whether info tells that the reader's stream is gone or
// another one.
func (r *streamReader) gone(info streamInfo) bool {
	return info.gone || info.created != 0 && info.created != r.inc
}

// Incarnation implements bridge.Incarnated: the stream's creation time.
func (r *streamReader) Incarnation() uint64 { return r.inc }

// Next returns the next message. After an error other than ctx's, it
// returns that error again: the bridge reopens at Position.
func (r *streamReader) Next(ctx context.Context) (bridge.Message, error) {
	if r.err != nil {
		return bridge.Message{}, r.err
	}
	var res streamResult
	select {
	case <-r.reset:
		return bridge.Message{}, r.resetError()
	case res = <-r.c:
	case <-r.exited:
		select {
		case <-r.reset: // run found it so, and returned
			return bridge.Message{}, r.resetError()
		default:
		}
		return bridge.Message{}, fmt.Errorf("nats: stream %s: %w", r.src.cfg.Stream, jetstream.ErrMsgIteratorClosed)
	case <-ctx.Done():
		return bridge.Message{}, ctx.Err()
	}
	if res.err != nil {
		if errors.Is(res.err, jetstream.ErrStreamNotFound) || r.checkStream() {
			return bridge.Message{}, r.resetError()
		}
		r.err = fmt.Errorf("nats: stream %s: %w", r.src.cfg.Stream, res.err)
		return bridge.Message{}, r.err
	}
	meta := res.meta
	select {
	case <-r.reset:
		return bridge.Message{}, r.resetError()
	default:
	}
	if seq := meta.Sequence.Stream; seq > r.next {
		if err := r.skipped(seq, meta.NumPending); err != nil {
			r.err = err
			return bridge.Message{}, err
		}
	}
	r.next, r.pending = meta.Sequence.Stream+1, meta.NumPending
	return bridge.Message{
		Offset:  meta.Sequence.Stream,
		Subject: res.msg.Subject(),
		Headers: headers(res.msg.Headers()),
		Time:    meta.Timestamp,
		Data:    res.msg.Data(),
	}, nil
}

// resetError returns, and keeps, the reader's error once the stream was
// deleted or created again.
func (r *streamReader) resetError() error {
	r.err = fmt.Errorf("nats: stream %s: %w", r.src.cfg.Stream, bridge.ErrReset)
	return r.err
}

// skipped returns a [*bridge.ExpiredError] if the consumer skipped, from
// r.next to seq, messages that the stream deleted before it read them (as
// retention does while a reader is behind); pending is the number of
// messages pending after seq. On a stream read whole, every skipped
// sequence was such a message. On a filtered one, most are other
// subjects'; but messages of the filter that were pending after the last
// one and are no longer there, were deleted: at least that many, exactly
// so when none were published meanwhile. The bridge reopens at seq.
func (r *streamReader) skipped(seq, pending uint64) error {
	exp := &bridge.ExpiredError{
		Resume: bridge.Position{seq},
		From:   bridge.Position{r.next},
		Lost:   fmt.Sprintf("nats: stream %s: sequences %d to %d deleted", r.src.cfg.Stream, r.next, seq-1),
		Missed: seq - r.next,
	}
	if r.src.cfg.Subject == "" {
		return exp
	}
	if r.pending <= pending+1 {
		return nil // other subjects' messages
	}
	exp.Missed = r.pending - pending - 1
	exp.Lost = fmt.Sprintf("nats: stream %s: %d messages of %s deleted between sequences %d and %d",
		r.src.cfg.Stream, exp.Missed, r.src.cfg.Subject, r.next, seq-1)
	return exp
}

// Position returns the sequence after the last message Next returned, or
// where the reader started.
func (r *streamReader) Position() bridge.Position { return bridge.Position{r.next} }

// Close stops the reader's goroutines, which delete its consumer on the
// server (which would otherwise do so after inactiveThreshold): it may
// wait up to deleteTimeout for a server that does not answer, twice if a
// replaced consumer is being deleted too. It is idempotent.
func (r *streamReader) Close() error {
	r.close.Do(func() {
		r.cancel()
		<-r.exited
		<-r.watched
	})
	return nil
}
