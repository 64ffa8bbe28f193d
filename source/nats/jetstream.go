package nats

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
)

const (
	// deleteTimeout bounds the deletion of a consumer.
	deleteTimeout = 2 * time.Second
	// createTimeout bounds the creation of a reader's consumer, which the
	// context of Open does not bound (see openStream).
	createTimeout = 10 * time.Second
	// inactiveThreshold is how long the server keeps a consumer that no
	// pull request waits on (nats.go's default is 5 minutes): a consumer
	// that esbridge could not delete, because its connection was down or
	// the bridge stopped, is gone within seconds of its last pull request
	// (which waits up to 30 s). A reader that is not read for that long
	// loses its consumer, and gets a new one at its position when it is
	// read again, after nats.go missed two heartbeats (10 s).
	inactiveThreshold = 10 * time.Second
	// watchInterval is how often a reader reads the stream's info, to
	// notice the stream deleted or created again (see watch).
	watchInterval = time.Second
	// infoTimeout bounds a read of the stream's info.
	infoTimeout = 2 * time.Second
)

// A streamReader reads a JetStream stream through an ordered consumer. A
// goroutine, which Close waits for, calls the consumer's Next, which can
// block past any deadline while it re-creates the consumer; Next waits for
// it with its context. Another one watches the stream: an ordered
// consumer whose stream is deleted and created again goes on reading the
// new stream from its old sequence, unaware.
type streamReader struct {
	src       *Source
	conn      *conn  // the live or the replay connection
	live      bool   // opened as the live reader, see liveStart
	prefix    string // of the consumer names: PREFIX_1, PREFIX_2... as nats.go re-creates it
	inc       uint64 // the stream's creation time, Unix nanoseconds: its incarnation
	cons      jetstream.Consumer
	it        jetstream.MessagesContext
	ctx       context.Context // ends when the reader is closed
	cancel    context.CancelFunc
	c         chan streamResult // unbuffered: run holds at most one message
	exited    chan struct{}     // closed when run returns
	failed    bool              // set by run before exited is closed: the consumer failed
	reset     chan struct{}     // closed by watch: the stream was deleted or created again
	resetOnce sync.Once
	watched   chan struct{} // closed when watch returns
	close     sync.Once

	// Owned by the goroutine calling Next.
	next     uint64 // sequence of the next message to return
	pending  uint64 // messages pending for the consumer after the last one
	consumer string // name of the consumer of the last message
	err      error  // the reader's final error
}

type streamResult struct {
	msg jetstream.Msg
	err error
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
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   next,
		// One attempt: after a failed re-creation Next returns the error
		// and the bridge reopens at Position. (With more, nats.go v1.55
		// panics when the consumer is stopped between attempts.)
		MaxResetAttempts:  1,
		InactiveThreshold: s.inactive,
		// Named by us, so that a consumer whose creation failed or was
		// given up can still be deleted: nats.go names it PREFIX_1.
		NamePrefix: "esbridge-" + rand.Text(),
	}
	if s.cfg.Subject != "" {
		cfg.FilterSubjects = []string{s.cfg.Subject}
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
		r, err := s.newStreamReader(c, st, cfg, live, uint64(info.Created.UnixNano()))
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

// newStreamReader creates the consumer of cfg, under a context of its own,
// and starts reading it. If that fails, it deletes the consumer, which
// may have been made on the server all the same.
func (s *Source) newStreamReader(c *conn, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig, live bool, inc uint64) (*streamReader, error) {
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		// The request may have reached the server and made the
		// consumer after all (a timeout), or been refused (which costs
		// this delete a round trip).
		s.deleteConsumer(c, cfg.NamePrefix+"_1")
		return nil, err
	}
	it, err := cons.Messages()
	if err != nil {
		if info := cons.CachedInfo(); info != nil {
			s.deleteConsumer(c, info.Name)
		}
		return nil, err
	}
	r := &streamReader{src: s, conn: c, live: live, prefix: cfg.NamePrefix, inc: inc, cons: cons, it: it,
		next: cfg.OptStartSeq, consumer: cfg.NamePrefix + "_1",
		c: make(chan streamResult), exited: make(chan struct{}), reset: make(chan struct{}), watched: make(chan struct{})}
	if info := cons.CachedInfo(); info != nil {
		r.pending = info.NumPending
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	go r.watch()
	return r, nil
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

// run passes the consumer's messages to Next, until the first error or
// until the reader is closed.
func (r *streamReader) run() {
	defer close(r.exited)
	for {
		m, err := r.it.Next(jetstream.NextContext(r.ctx))
		if r.ctx.Err() != nil {
			return
		}
		if err != nil {
			r.failed = true
		}
		select {
		case r.c <- streamResult{m, err}:
		case <-r.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
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
	meta, err := res.msg.Metadata()
	if err != nil {
		r.err = fmt.Errorf("nats: stream %s: %w", r.src.cfg.Stream, err)
		return bridge.Message{}, r.err
	}
	if meta.Consumer != r.consumer {
		// nats.go re-created the consumer: after a reconnect, or because
		// the stream was deleted, and perhaps created again. Which?
		r.consumer = meta.Consumer
		if r.checkStream() {
			return bridge.Message{}, r.resetError()
		}
	}
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

// Close stops the consumer, waits for its goroutine and deletes the
// consumer on the server (which would otherwise do so after
// inactiveThreshold). It may wait up to nats.go's API timeout if the
// consumer is being re-created at that moment. It is idempotent.
func (r *streamReader) Close() error {
	r.close.Do(r.stop)
	return nil
}

// stop stops the consumer, waits for run and deletes the consumer: the
// current one and, if the reader failed, the one nats.go may have been
// re-creating, which it names with the next serial number.
func (r *streamReader) stop() {
	r.cancel()
	r.it.Stop()
	<-r.exited
	<-r.watched
	info := r.cons.CachedInfo()
	if info == nil {
		return
	}
	r.src.deleteConsumer(r.conn, info.Name)
	if serial, err := strconv.Atoi(strings.TrimPrefix(info.Name, r.prefix+"_")); r.failed && err == nil {
		r.src.deleteConsumer(r.conn, fmt.Sprintf("%s_%d", r.prefix, serial+1))
	}
}
