package nats

import (
	"context"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
)

// OpenSnapshot returns a reader of the last message of each subject of
// the JetStream stream (of the route's subject, if it has one) before
// upTo, by JetStream's last-per-subject delivery: what a snapshot table
// keyed by subject needs, without the messages each subject had before
// (see [bridge.Snapshotter]). Its Next returns io.EOF once it has
// returned them; it may return later messages before that, which the
// bridge passes over. It reads over the replay connection, through an
// ordered consumer of its own. ctx bounds the opening. Core NATS keeps
// no history: OpenSnapshot returns an error wrapping
// [bridge.ErrNoHistory].
func (s *Source) OpenSnapshot(ctx context.Context, upTo bridge.Position) (bridge.Reader, error) {
	if len(upTo) != 1 {
		return nil, fmt.Errorf("nats: stream %s: position of %d partitions, want 1: %w", s.cfg.Stream, len(upTo), bridge.ErrBadPosition)
	}
	c, st, err := s.stream(ctx, true)
	if err != nil {
		return nil, err
	}
	info := st.CachedInfo()
	r := &lastReader{src: s, conn: c, upTo: upTo[0]}
	if info.State.Msgs == 0 || upTo[0] <= info.State.FirstSeq {
		r.done = true // nothing before upTo
		return r, nil
	}
	filters := []string{s.cfg.Subject}
	if s.cfg.Subject == "" {
		filters = info.Config.Subjects
	}
	if len(filters) == 0 {
		filters = []string{">"} // a mirror, say
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: s.inactive,
	})
	if err != nil {
		return nil, fmt.Errorf("nats: stream %s: snapshot consumer: %w: %w", s.cfg.Stream, bridge.ErrUnavailable, err)
	}
	r.cons = cons
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		r.done = true // no subject has a message
		return r, nil
	}
	it, err := cons.Messages()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("nats: stream %s: snapshot consumer: %w: %w", s.cfg.Stream, bridge.ErrUnavailable, err)
	}
	r.it = it
	return r, nil
}

// A lastReader reads the last message of each subject of a stream, in
// the order of their sequences, which last-per-subject delivery keeps.
type lastReader struct {
	src  *Source
	conn *conn
	upTo uint64
	cons jetstream.Consumer
	it   jetstream.MessagesContext
	next uint64
	done bool // the last of them was returned
}

// Next returns the next message, or io.EOF once the last one before upTo
// was returned: the last of those the consumer had pending when it was
// made, or one at upTo or after.
func (r *lastReader) Next(ctx context.Context) (bridge.Message, error) {
	if r.done {
		return bridge.Message{}, io.EOF
	}
	msg, err := r.it.Next(jetstream.NextContext(ctx))
	if err != nil {
		return bridge.Message{}, fmt.Errorf("nats: stream %s: snapshot: %w", r.src.cfg.Stream, err)
	}
	meta, err := msg.Metadata()
	if err != nil {
		return bridge.Message{}, fmt.Errorf("nats: stream %s: snapshot: %w", r.src.cfg.Stream, err)
	}
	seq := meta.Sequence.Stream
	r.next = seq + 1
	r.done = meta.NumPending == 0 || seq+1 >= r.upTo
	return bridge.Message{
		Offset:  seq,
		Subject: msg.Subject(),
		Headers: headers(msg.Headers()),
		Time:    meta.Timestamp,
		Data:    msg.Data(),
	}, nil
}

// Position returns the sequence after the last message returned.
func (r *lastReader) Position() bridge.Position { return bridge.Position{r.next} }

// Close stops and deletes the consumer. It is idempotent.
func (r *lastReader) Close() error {
	if r.it != nil {
		r.it.Stop()
	}
	if r.cons != nil {
		if ci := r.cons.CachedInfo(); ci != nil {
			r.src.deleteConsumer(r.conn, ci.Name)
		}
		r.cons = nil
	}
	return nil
}

var _ bridge.Snapshotter = (*Source)(nil)
