package nats

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
)

// deleteTimeout bounds the deletion of a closed reader's consumer.
const deleteTimeout = 2 * time.Second

// A streamReader reads a JetStream stream through an ordered consumer. A
// goroutine, which Close waits for, calls the consumer's Next, which can
// block past any deadline while it re-creates the consumer; Next waits for
// it with its context.
type streamReader struct {
	src    *Source
	cons   jetstream.Consumer
	it     jetstream.MessagesContext
	ctx    context.Context // ends when the reader is closed
	cancel context.CancelFunc
	c      chan streamResult // unbuffered: run holds at most one message
	exited chan struct{}     // closed when run returns
	close  sync.Once

	// Owned by the goroutine calling Next.
	next uint64 // sequence of the next message to return
	err  error  // the reader's final error
}

type streamResult struct {
	msg jetstream.Msg
	err error
}

func (s *Source) openStream(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	if start.Position != nil && len(start.Position) != 1 {
		return nil, fmt.Errorf("nats: stream %s: position of %d partitions, want 1", s.cfg.Stream, len(start.Position))
	}
	if err := s.unavailable(); err != nil {
		return nil, err
	}
	st, err := s.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("nats: stream %s: %w: %w", s.cfg.Stream, bridge.ErrUnavailable, err)
	}
	state := st.CachedInfo().State
	// Start by sequence even for the latest message, rather than with
	// DeliverNewPolicy, so that Position is exact: nothing stored after
	// the stream info was read is skipped.
	next := state.LastSeq + 1
	switch {
	case start.Position != nil:
		next = start.Position[0]
		if next == 0 {
			return nil, fmt.Errorf("nats: stream %s: sequence 0 is not a position", s.cfg.Stream)
		}
		if next < state.FirstSeq {
			return nil, &bridge.ExpiredError{
				Resume: bridge.Position{state.FirstSeq},
				Lost:   fmt.Sprintf("nats: stream %s: sequences %d to %d deleted", s.cfg.Stream, next, state.FirstSeq-1),
			}
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
		MaxResetAttempts: 1,
	}
	if s.cfg.Subject != "" {
		cfg.FilterSubjects = []string{s.cfg.Subject}
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("nats: stream %s: consumer: %w: %w", s.cfg.Stream, bridge.ErrUnavailable, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("nats: stream %s: consumer: %w: %w", s.cfg.Stream, bridge.ErrUnavailable, err)
	}
	r := &streamReader{src: s, cons: cons, it: it, next: next, c: make(chan streamResult), exited: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	return r, nil
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

// Next returns the next message. After an error other than ctx's, it
// returns that error again: the bridge reopens at Position.
func (r *streamReader) Next(ctx context.Context) (bridge.Message, error) {
	if r.err != nil {
		return bridge.Message{}, r.err
	}
	var res streamResult
	select {
	case res = <-r.c:
	case <-r.exited:
		return bridge.Message{}, fmt.Errorf("nats: stream %s: %w", r.src.cfg.Stream, jetstream.ErrMsgIteratorClosed)
	case <-ctx.Done():
		return bridge.Message{}, ctx.Err()
	}
	if res.err != nil {
		r.err = fmt.Errorf("nats: stream %s: %w", r.src.cfg.Stream, res.err)
		return bridge.Message{}, r.err
	}
	meta, err := res.msg.Metadata()
	if err != nil {
		r.err = fmt.Errorf("nats: stream %s: %w", r.src.cfg.Stream, err)
		return bridge.Message{}, r.err
	}
	r.next = meta.Sequence.Stream + 1
	return bridge.Message{
		Offset:  meta.Sequence.Stream,
		Subject: res.msg.Subject(),
		Headers: headers(res.msg.Headers()),
		Time:    meta.Timestamp,
		Data:    res.msg.Data(),
	}, nil
}

// Position returns the sequence after the last message Next returned, or
// where the reader started.
func (r *streamReader) Position() bridge.Position { return bridge.Position{r.next} }

// Close stops the consumer, waits for its goroutine and deletes the
// consumer on the server (which would otherwise do so after 5 minutes of
// inactivity). It may wait up to nats.go's API timeout if the consumer is
// being re-created at that moment. It is idempotent.
func (r *streamReader) Close() error {
	r.close.Do(func() {
		r.cancel()
		r.it.Stop()
		<-r.exited
		info := r.cons.CachedInfo()
		if info == nil || !r.src.nc.IsConnected() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
		defer cancel()
		if err := r.src.js.DeleteConsumer(ctx, r.src.cfg.Stream, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			r.src.log.Debug("nats: delete consumer", "stream", r.src.cfg.Stream, "consumer", info.Name, "err", err)
		}
	})
	return nil
}
