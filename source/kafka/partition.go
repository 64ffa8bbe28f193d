package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/backoff"
)

// Settings of the partition fetches.
const (
	// fetchMaxWait is how long a fetch waits for new messages at the end
	// of a partition.
	fetchMaxWait = 500 * time.Millisecond
	// fetchMaxBytes is the most a fetch of one partition returns.
	fetchMaxBytes = 8 << 20
	// answerTimeout bounds the wait for a broker's answer beyond what it
	// was asked to wait (a fetch's fetchMaxWait), and for each chunk of a
	// fetch after the first: a broker that is frozen (stopped, or cut off
	// without a reset) is given up within it.
	answerTimeout = 2 * time.Second
	// dialTimeout bounds a connection to a partition's leader.
	dialTimeout = 2 * time.Second
	// chunkSize is the most messages a partition hands to Next at once.
	chunkSize = 256
	// retryMin and retryMax bound the wait before reconnecting.
	retryMin, retryMax = 50 * time.Millisecond, 500 * time.Millisecond
	// leaderCheckInterval is the least time between two checks of the
	// topic asked for by partitions that lost their leader.
	leaderCheckInterval = 100 * time.Millisecond
)

// A partition reads one partition of the topic for a reader, over a
// connection to the partition's leader (kafka-go's Conn), and hands the
// messages to Next in chunks of up to chunkSize: one hand-off per chunk,
// not per message.
//
// A partition fails alone. When its leader dies, is frozen or moves, it
// tells the reader it is stalled (see reader.Stalled), asks for the
// topic's leaders afresh (one check for every partition of the source
// that asks meanwhile) and connects to the new leader, as often as it
// takes, while the other partitions read on. Only an error that
// reconnecting does not cure (retention deleted its next offset, an
// authorization refused) ends the reader: Next returns it.
type partition struct {
	r     *reader
	id    int
	next  int64     // the offset of the next message to hand to Next
	meta  topicMeta // the topic as last checked: the leader to connect to
	retry backoff.Backoff
	// unchecked is set until a fetch succeeds when next was not checked
	// against the partition's offsets (its leader did not tell Open): an
	// offset past the high-water mark is then a client's position that
	// the broker never issued, not one to wait for.
	unchecked bool
}

// run reads the partition until the reader is closed or the partition
// fails for good, and hands that error to Next.
func (p *partition) run() {
	defer p.r.wg.Done()
	log := p.r.src.log
	for {
		from := p.next
		err := p.session()
		if p.r.ctx.Err() != nil {
			return
		}
		if fatal(err) {
			p.r.send(event{err: p.wrap(err)})
			return
		}
		if p.next > from {
			// The connection failed after reading something (timed out
			// in a fetch over a slow network, say): no stall, go on.
			log.Debug("kafka: partition read interrupted; reconnecting", "topic", p.r.src.cfg.Topic, "partition", p.id, "offset", p.next, "err", err)
			continue
		}
		if p.r.stall(p.id, err) {
			log.Warn("kafka: partition read failed; reconnecting", "topic", p.r.src.cfg.Topic, "partition", p.id, "offset", p.next, "err", err)
		} else {
			log.Debug("kafka: partition read failed again", "topic", p.r.src.cfg.Topic, "partition", p.id, "offset", p.next, "err", err)
		}
		if !p.retry.Wait(p.r.ctx) {
			return
		}
		p.refresh()
	}
}

// refresh learns the topic's leaders afresh, from a check made after the
// partition failed.
func (p *partition) refresh() {
	s := p.r.src
	s.topicCheck.Soon()
	if check, ok := s.topicCheck.Next(p.r.ctx); ok && check.err == nil {
		p.meta = check.meta
	}
}

// wrap names the topic, the partition and the offset in err, unless it is
// an *expiredPartition, which does.
func (p *partition) wrap(err error) error {
	var exp *expiredPartition
	if errors.As(err, &exp) {
		return err
	}
	return fmt.Errorf("kafka: topic %s: partition %d at offset %d: %w", p.r.src.cfg.Topic, p.id, p.next, err)
}

// fatal reports whether err is one that reconnecting does not cure.
func fatal(err error) bool {
	var exp *expiredPartition
	var kerr kafka.Error
	return errors.As(err, &exp) || errors.Is(err, bridge.ErrAhead) || errors.As(err, &kerr) && !kerr.Temporary()
}

// session connects to the partition's leader and fetches from it until
// an error, which it returns.
func (p *partition) session() error {
	conn, err := p.dial()
	if err != nil {
		return err
	}
	// Closing the connection interrupts a fetch when the reader closes.
	stop := context.AfterFunc(p.r.ctx, func() { conn.Close() })
	defer func() {
		stop()
		conn.Close()
	}()
	if _, err := conn.Seek(p.next, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		return err
	}
	for {
		if err := p.fetch(conn); err != nil {
			return err
		}
		p.r.unstall(p.id)
		p.retry.Reset()
		p.unchecked = false
	}
}

// errNoLeader is the failure of a partition whose leader the brokers do
// not know: an election is under way.
var errNoLeader = errors.New("no leader")

// dial connects to the partition's leader, as the last check of the
// topic named it. A broker older than Metadata version 12 names no
// leaders: then each broker is asked for it in turn.
func (p *partition) dial() (*kafka.Conn, error) {
	s := p.r.src
	if len(p.meta.leaders) == 0 {
		return p.dialAsking()
	}
	leader, ok := p.meta.leader(p.id)
	if !ok {
		return nil, errNoLeader
	}
	ctx, cancel := context.WithTimeout(p.r.ctx, dialTimeout)
	defer cancel()
	return s.dialer.DialPartition(ctx, "tcp", "", kafka.Partition{Topic: s.cfg.Topic, ID: p.id, Leader: leader})
}

// dialAsking connects to the partition's leader, asking each broker in
// turn. Each attempt is bounded: kafka-go's look-up of the leader waits,
// for good, for a topic that does not exist (deleted, say).
func (p *partition) dialAsking() (*kafka.Conn, error) {
	s := p.r.src
	var err error
	for _, b := range s.cfg.Brokers {
		ctx, cancel := context.WithTimeout(p.r.ctx, dialTimeout)
		var conn *kafka.Conn
		conn, err = s.dialer.DialLeader(ctx, "tcp", b, s.cfg.Topic, p.id)
		cancel()
		if err == nil {
			return conn, nil
		}
	}
	return nil, err
}

// fetch fetches the messages after those handed to Next, once, and hands
// them over. It returns nil once it has handed over every message of the
// fetch (none, at the end of the partition), else the error that ended it.
func (p *partition) fetch(conn *kafka.Conn) error {
	if err := conn.SetReadDeadline(time.Now().Add(fetchMaxWait + answerTimeout)); err != nil {
		return err
	}
	batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: fetchMaxBytes, MaxWait: fetchMaxWait})
	defer batch.Close()
	var chunk []bridge.Message
	for {
		m, err := batch.ReadMessage()
		if err == nil {
			err = p.check(m.Offset)
		} else {
			err = p.fetchError(err)
		}
		if err != nil {
			// Messages read before an error come before it.
			if !p.handOver(chunk) {
				return p.r.ctx.Err()
			}
			if err == errFetched {
				return nil
			}
			return err
		}
		if m.Offset < p.next {
			continue // before the start, in the first batch
		}
		p.next = m.Offset + 1
		if chunk == nil {
			// As many as the partition holds, up to a chunk.
			chunk = make([]bridge.Message, 0, min(max(batch.HighWaterMark()-m.Offset, 1), chunkSize))
		}
		chunk = append(chunk, message(m))
		if len(chunk) == chunkSize {
			if !p.handOver(chunk) {
				return p.r.ctx.Err()
			}
			chunk = nil
			// Handing over waits for Next, which may wait for its own
			// clients: the rest of the fetch gets a deadline of its own.
			if err := conn.SetReadDeadline(time.Now().Add(answerTimeout)); err != nil {
				return err
			}
		}
	}
}

// handOver passes the messages to Next, unless there are none, and
// reports false if the reader was closed first.
func (p *partition) handOver(msgs []bridge.Message) bool {
	return len(msgs) == 0 || p.r.send(event{msgs: msgs})
}

// check returns an error if offset, fetched, skips past offsets that the
// partition no longer holds. Compaction and transaction markers make
// gaps between offsets, retention must not: at every gap, check asks
// whether the partition still starts at or before the offset expected,
// and returns an *expiredPartition if not.
func (p *partition) check(offset int64) error {
	if offset <= p.next {
		return nil
	}
	first, _, err := p.span()
	if err != nil {
		// Unsure: reconnect, and fetch the gap again.
		return fmt.Errorf("offsets %d to %d skipped, and: %w", p.next, offset-1, err)
	}
	return p.expired(first)
}

// expired returns an *expiredPartition if first, the partition's first offset,
// is past the next offset to read.
func (p *partition) expired(first int64) error {
	if first <= p.next {
		return nil
	}
	return &expiredPartition{topic: p.r.src.cfg.Topic, partition: p.id, offset: uint64(p.next), first: uint64(first)}
}

// span returns the partition's first offset and high-water mark.
func (p *partition) span() (first, last int64, err error) {
	offs, err := p.r.src.offsets(p.r.ctx, p.meta, []int{p.id})
	if err != nil {
		return 0, 0, err
	}
	return offs[0].first, offs[0].last, nil
}

// errFetched ends a fetch that read every message it fetched.
var errFetched = errors.New("kafka: fetched")

// fetchError returns what err, which ended the messages of a fetch,
// means: errFetched at their normal end, else an error to reconnect
// after or, for a fatal one, to hand to Next. An offset out of range is
// waited for when it is past the end of the partition, and is an
// *expiredPartition when it was deleted.
func (p *partition) fetchError(err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, kafka.RequestTimedOut):
		return errFetched
	case !errors.Is(err, kafka.OffsetOutOfRange):
		return err
	}
	first, last, err := p.span()
	switch {
	case err != nil:
		return err
	case first > p.next:
		return p.expired(first)
	case p.next > last && p.unchecked:
		return fmt.Errorf("offset %d, the high-water mark is %d: %w", p.next, last, bridge.ErrAhead)
	case p.next > last:
		// Past the end: wait for the partition to grow.
		backoff.Sleep(p.r.ctx, fetchMaxWait)
	}
	return errFetched
}
