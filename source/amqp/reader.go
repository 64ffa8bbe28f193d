package amqp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esbridge/esbridge/bridge"
)

// aheadIdle is how long a reader asking where a stream's head is waits
// for one more message of its last chunk.
const aheadIdle = 200 * time.Millisecond

// offsetHeader is the header in which RabbitMQ gives a stream message's
// offset.
const offsetHeader = "x-stream-offset"

// A reader consumes a stream, a queue bound to an exchange, or a queue,
// on a channel of its own. When the channel or the connection closes, it
// consumes again on the next connection: a stream from the offset after
// the last message returned, an exchange with a new queue (and ErrLost
// once), a queue where the broker left it.
type reader struct {
	src  *Source
	kind kind

	ch         *amqp.Channel // nil until subscribed, and after Close
	deliveries <-chan amqp.Delivery
	cancels    <-chan string // the broker cancelled the consumer: the queue was deleted
	closed     bool

	// Acknowledgements: a delivery is acknowledged once the message before
	// it was returned by Next, in batches of half the prefetch count.
	unacked int
	lastTag uint64

	// Streams: the offset of the next message, once known (it is not when
	// reading from the latest before the first message); first says to
	// begin with the earliest message.
	next   uint64
	known  bool
	first  bool
	verify bool // the first message after consuming from next is to be checked
}

// subscribe opens a channel on the connection, waiting for one until ctx
// ends, and consumes.
func (r *reader) subscribe(ctx context.Context) error {
	conn, err := r.src.connection(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return r.unavailable(err)
	}
	deliveries, err := r.consume(ch)
	if err != nil {
		ch.Close()
		return r.unavailable(err)
	}
	r.ch, r.deliveries, r.unacked = ch, deliveries, 0
	r.cancels = ch.NotifyCancel(make(chan string, 1))
	r.verify = r.known
	return nil
}

// gone returns an error wrapping bridge.ErrReset if the broker cancelled
// the consumer of a stream because the stream was deleted: it asks
// whether the stream is there (a consumer is cancelled for other reasons
// too, a stream's leader moving, say). Otherwise the reader consumes
// again.
func (r *reader) gone(ctx context.Context) error {
	select {
	case _, ok := <-r.cancels:
		if !ok || r.kind != kindStream {
			return nil
		}
	default:
		return nil
	}
	conn, err := r.src.connection(ctx)
	if err != nil {
		return nil // the next subscribe waits for the connection
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil
	}
	defer ch.Close()
	_, err = ch.QueueDeclarePassive(r.src.cfg.Stream, true, false, false, false, amqp.Table{"x-queue-type": "stream"})
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
		return fmt.Errorf("amqp: stream %s deleted: %w", r.src.cfg.Stream, bridge.ErrReset)
	}
	return nil
}

// ahead reports whether want, the offset of the next message, is beyond
// the head of the stream: past the one after its last message. It
// consumes from the stream's last chunk, on a channel of its own, until
// it sees an offset at or past want-1, or none comes for aheadIdle.
func (r *reader) ahead(ctx context.Context, want uint64) (bool, error) {
	if want == 0 {
		return false, nil
	}
	conn, err := r.src.connection(ctx)
	if err != nil {
		return false, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return false, r.unavailable(err)
	}
	defer ch.Close()
	if err := ch.Qos(r.src.cfg.prefetch(), 0, false); err != nil {
		return false, r.unavailable(err)
	}
	deliveries, err := ch.Consume(r.src.cfg.Stream, "", false, false, false, false, amqp.Table{offsetHeader: "last"})
	if err != nil {
		return false, r.unavailable(err)
	}
	idle := time.NewTimer(aheadIdle)
	defer idle.Stop()
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return false, r.unavailable(errors.New("channel closed"))
			}
			if off, isStream := streamOffset(&d); isStream && off+1 >= want {
				return false, nil
			}
			d.Ack(false) // for more: the last chunk may hold more than the prefetch
			idle.Reset(aheadIdle)
		case <-idle.C:
			return true, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// checkExpired returns a [*bridge.ExpiredError] if off, the offset of the first
// message consumed from r.next on, is the first of the stream: the broker
// then began at its start because retention deleted r.next. Otherwise
// the offsets from r.next to off held no message.
func (r *reader) checkExpired(ctx context.Context, off uint64) error {
	first, err := r.firstOffset(ctx)
	if err != nil {
		return err
	}
	if off <= first {
		return &bridge.ExpiredError{
			Resume: bridge.Position{off},
			From:   bridge.Position{r.next},
			Lost:   fmt.Sprintf("amqp: stream %s: offsets %d to %d deleted", r.src.cfg.Stream, r.next, off-1),
			Missed: off - min(r.next, off),
		}
	}
	return nil
}

// firstOffset returns the offset of the first message the stream holds,
// consuming it on a channel of its own.
func (r *reader) firstOffset(ctx context.Context) (uint64, error) {
	conn, err := r.src.connection(ctx)
	if err != nil {
		return 0, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return 0, r.unavailable(err)
	}
	defer ch.Close()
	if err := ch.Qos(1, 0, false); err != nil {
		return 0, r.unavailable(err)
	}
	deliveries, err := ch.Consume(r.src.cfg.Stream, "", false, false, false, false, amqp.Table{offsetHeader: "first"})
	if err != nil {
		return 0, r.unavailable(err)
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	select {
	case d, ok := <-deliveries:
		if off, isStream := streamOffset(&d); ok && isStream {
			return off, nil
		}
		return 0, r.unavailable(errors.New("no first message"))
	case <-ctx.Done():
		return 0, r.unavailable(ctx.Err())
	}
}

// consume starts consuming on ch.
func (r *reader) consume(ch *amqp.Channel) (<-chan amqp.Delivery, error) {
	cfg := &r.src.cfg
	if err := ch.Qos(cfg.prefetch(), 0, false); err != nil {
		return nil, err
	}
	queue, exclusive := cfg.Queue, false
	var args amqp.Table
	switch r.kind {
	case kindStream:
		queue = cfg.Stream
		args = amqp.Table{offsetHeader: r.startOffset()}
	case kindExchange:
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			return nil, err
		}
		if err := ch.QueueBind(q.Name, cfg.bindingKey(), cfg.Exchange, false, nil); err != nil {
			return nil, err
		}
		queue, exclusive = q.Name, true
	}
	return ch.Consume(queue, "", false, exclusive, false, false, args)
}

// startOffset returns the x-stream-offset argument that consumes a stream
// from where the reader stands.
func (r *reader) startOffset() any {
	switch {
	case r.known:
		return int64(r.next)
	case r.first:
		return "first"
	default:
		return "next"
	}
}

// unavailable wraps err, from the broker, in bridge.ErrUnavailable.
func (r *reader) unavailable(err error) error {
	return fmt.Errorf("amqp: %s: %w: %w", r.src.cfg.name(), bridge.ErrUnavailable, err)
}

// Next returns the next message. When the connection drops, it waits for
// the next one and consumes again; for an exchange it then returns an
// error wrapping bridge.ErrLost once. For a stream, it returns an
// [*bridge.ExpiredError] when the broker no longer holds the next offset.
func (r *reader) Next(ctx context.Context) (bridge.Message, error) {
	if r.closed {
		return bridge.Message{}, ErrClosed
	}
	if r.ch != nil && r.unacked >= max(1, r.src.cfg.prefetch()/2) {
		// Every message returned so far was handed over: let the broker
		// send more.
		r.ch.Ack(r.lastTag, true) // an error closes deliveries
		r.unacked = 0
	}
	for {
		if r.ch == nil {
			if err := r.subscribe(ctx); err != nil {
				return bridge.Message{}, err
			}
			if r.kind == kindExchange {
				return bridge.Message{}, fmt.Errorf("amqp: %s: reconnected: %w", r.src.cfg.name(), bridge.ErrLost)
			}
		}
		d, ok, err := r.receive(ctx)
		switch {
		case err != nil:
			return bridge.Message{}, err
		case !ok:
			r.ch.Close()
			r.ch, r.unacked = nil, 0
			if err := r.gone(ctx); err != nil {
				return bridge.Message{}, err
			}
			continue
		}
		r.lastTag = d.DeliveryTag
		r.unacked++
		if r.kind != kindStream {
			return message(&d, 0), nil
		}
		off, ok := streamOffset(&d)
		switch {
		case !ok:
			return bridge.Message{}, fmt.Errorf("amqp: queue %s: a message without offset: not a stream queue", r.src.cfg.Stream)
		case r.known && off < r.next:
			continue // before the start, in the chunk the broker sent whole
		case r.verify && off > r.next:
			// Offsets are not contiguous (RabbitMQ gives some to
			// entries of its own), so this may be no loss.
			if err := r.checkExpired(ctx, off); err != nil {
				return bridge.Message{}, err
			}
		}
		r.next, r.known, r.verify = off+1, true, false
		return message(&d, off), nil
	}
}

// receive returns the next delivery, and false once the channel is
// closed.
func (r *reader) receive(ctx context.Context) (amqp.Delivery, bool, error) {
	select {
	case d, ok := <-r.deliveries:
		return d, ok, nil
	case <-ctx.Done():
		return amqp.Delivery{}, false, ctx.Err()
	}
}

// Position returns the offset of the next message of a stream, once known;
// nil before the first message of a stream read from the latest, and for
// exchanges and queues.
func (r *reader) Position() bridge.Position {
	if r.kind != kindStream || !r.known {
		return nil
	}
	return bridge.Position{r.next}
}

// Close closes the reader's channel. A queue's unacknowledged messages go
// back to the queue. It is idempotent.
func (r *reader) Close() error {
	r.closed = true
	if r.ch == nil {
		return nil
	}
	ch := r.ch
	r.ch = nil
	if err := ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("amqp: %s: close: %w", r.src.cfg.name(), err)
	}
	return nil
}

// streamOffset returns the offset of a stream message.
func streamOffset(d *amqp.Delivery) (uint64, bool) {
	switch v := d.Headers[offsetHeader].(type) {
	case int64:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	}
	return 0, false
}

// message returns d as a bridge message at offset off.
func message(d *amqp.Delivery, off uint64) bridge.Message {
	return bridge.Message{
		Offset:  off,
		Subject: d.RoutingKey,
		Headers: headers(d.Headers),
		Time:    d.Timestamp,
		Data:    d.Body,
	}
}

// headers returns the AMQP headers, keys sorted, without RabbitMQ's
// x-stream- ones. Values other than strings are formatted with fmt.
func headers(t amqp.Table) []bridge.Header {
	own := 0
	for k := range t {
		if strings.HasPrefix(k, "x-stream-") {
			own++
		}
	}
	if own == len(t) {
		return nil // no allocation for a stream message without headers
	}
	hs := make([]bridge.Header, 0, len(t)-own)
	for _, k := range slices.Sorted(maps.Keys(t)) {
		if strings.HasPrefix(k, "x-stream-") {
			continue
		}
		var v string
		switch x := t[k].(type) {
		case string:
			v = x
		case []byte:
			v = string(x)
		default:
			v = fmt.Sprint(x)
		}
		hs = append(hs, bridge.Header{Key: k, Value: v})
	}
	return hs
}
