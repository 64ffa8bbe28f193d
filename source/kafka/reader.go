package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/backoff"
)

// errClosed is returned by Next after Close.
var errClosed = errors.New("kafka: reader closed")

// A reader merges the partitions of a topic. One goroutine per partition
// reads it (a [partition], no consumer group) and hands its messages, in
// order and in chunks, to Next through one channel; another polls the
// topic's metadata for new partitions, and for the topic deleted or
// created again. Close ends and waits for them all.
type reader struct {
	src    *Source
	inc    uint64          // the topic's ID, folded; 0 if the broker gives none
	ctx    context.Context // ends when the reader is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup
	c      chan event // buffered, so that partitions hand over chunks without a switch each
	close  sync.Once

	// Owned by the goroutine calling Next.
	msgs []bridge.Message // what Next returns next, of the last chunk received
	pos  []uint64         // for each partition, the offset of the next message
	err  error            // the reader's final error

	stallMu sync.Mutex
	stalls  map[int]bridge.Stall // the partitions failing to read, by ID
}

// watchInterval is how often a reader checks that its topic is still the
// one it read (see poll).
const watchInterval = time.Second

// mergeBuffer is how many chunks of messages the partitions' goroutines
// may have read ahead of Next, all partitions together.
const mergeBuffer = 16

// An event is what the goroutines pass to Next: a chunk of messages of one
// partition, an error after which the reader stops, or the start offsets
// of added partitions.
type event struct {
	msgs  []bridge.Message
	err   error
	added []int64
}

// newReader starts reading each partition i of the topic from next[i],
// from the leaders of meta; unchecked[i], if true, means that next[i] was
// not checked against the partition's offsets (see partition.unchecked).
func (s *Source) newReader(next []int64, meta topicMeta, unchecked []bool) *reader {
	r := &reader{src: s, inc: meta.incarnation(), c: make(chan event, mergeBuffer), pos: make([]uint64, len(next))}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	for i, o := range next {
		r.pos[i] = uint64(o)
	}
	r.wg.Add(len(next) + 1)
	for i, o := range next {
		r.startPartition(i, o, meta, i < len(unchecked) && unchecked[i])
	}
	go r.poll(len(next))
	return r
}

// send passes ev to Next, unless the reader is closed first.
func (r *reader) send(ev event) bool {
	select {
	case r.c <- ev:
		return true
	case <-r.ctx.Done():
		return false
	}
}

// startPartition starts reading partition id from offset next on, from
// its leader in meta.
func (r *reader) startPartition(id int, next int64, meta topicMeta, unchecked bool) {
	p := &partition{r: r, id: id, next: next, meta: meta, unchecked: unchecked, retry: backoff.Backoff{Min: retryMin, Max: retryMax}}
	go p.run()
}

// stall records that partition id failed to read with err, and reports
// whether it was read before: the start of a stall.
func (r *reader) stall(id int, err error) bool {
	r.stallMu.Lock()
	defer r.stallMu.Unlock()
	st, stalled := r.stalls[id]
	if !stalled {
		if r.stalls == nil {
			r.stalls = make(map[int]bridge.Stall)
		}
		st = bridge.Stall{Partition: id, Since: time.Now()}
	}
	st.Err = err
	r.stalls[id] = st
	return !stalled
}

// unstall records that partition id reads.
func (r *reader) unstall(id int) {
	r.stallMu.Lock()
	defer r.stallMu.Unlock()
	delete(r.stalls, id)
}

// Stalled implements [bridge.Staller]: the partitions whose last
// connection or fetch failed, and that have read nothing since.
func (r *reader) Stalled() []bridge.Stall {
	r.stallMu.Lock()
	defer r.stallMu.Unlock()
	if len(r.stalls) == 0 {
		return nil
	}
	stalls := make([]bridge.Stall, 0, len(r.stalls))
	for _, st := range r.stalls {
		stalls = append(stalls, st)
	}
	slices.SortFunc(stalls, func(a, b bridge.Stall) int { return a.Partition - b.Partition })
	return stalls
}

// poll follows the source's checks of the topic (every watchInterval, see
// Source.topicCheck), and hands Next an error
// wrapping bridge.ErrReset once it finds it created again (another ID, or
// fewer partitions), or deleted (twice in a row, so that a broker that
// has not loaded its metadata yet is not taken at its word). At most
// every MetadataInterval, it starts reading the partitions a check found
// added to the topic, from their first offset. n is the number of
// partitions read.
func (r *reader) poll(n int) {
	defer r.wg.Done()
	s := r.src
	defer s.topicCheck.Watch(s.checkTopic)()
	lastMetadata := time.Now()
	for {
		check, ok := s.topicCheck.Next(r.ctx)
		if !ok {
			return
		}
		var reset error
		switch {
		case check.missing >= 2:
			reset = fmt.Errorf("kafka: topic %s deleted: %w", s.cfg.Topic, bridge.ErrReset)
		case check.err != nil:
		case r.inc != 0 && check.meta.incarnation() != r.inc:
			reset = fmt.Errorf("kafka: topic %s created again: %w", s.cfg.Topic, bridge.ErrReset)
		case check.meta.partitions != 0 && check.meta.partitions < n:
			reset = fmt.Errorf("kafka: topic %s has %d partitions, no longer %d: %w", s.cfg.Topic, check.meta.partitions, n, bridge.ErrReset)
		}
		if reset != nil {
			r.send(event{err: reset})
			return
		}
		if time.Since(lastMetadata) < s.cfg.MetadataInterval {
			continue
		}
		lastMetadata = time.Now()
		m := check.meta.partitions
		if check.err != nil || m <= n {
			continue
		}
		added := make([]int, m-n)
		for i := range added {
			added[i] = n + i
		}
		offs, err := s.offsets(r.ctx, check.meta, added)
		if err != nil {
			s.log.Debug("kafka: offsets of new partitions", "topic", s.cfg.Topic, "err", err)
			continue
		}
		starts := make([]int64, len(offs))
		for i, o := range offs {
			starts[i] = o.first
		}
		// Next learns of the partitions before any of their messages.
		if !r.send(event{added: starts}) {
			return
		}
		s.log.Info("kafka: partitions added", "topic", s.cfg.Topic, "from", n, "to", m)
		r.wg.Add(len(starts))
		for i, o := range starts {
			r.startPartition(n+i, o, check.meta, false)
		}
		n = m
	}
}

// Next returns the next message of any partition, in order within each.
// After an error other than ctx's it returns that error again: the bridge
// reopens at Position. An error from a partition whose next offset was
// deleted by retention while it was read is a [*bridge.ExpiredError].
func (r *reader) Next(ctx context.Context) (bridge.Message, error) {
	for r.err == nil {
		if err := ctx.Err(); err != nil {
			return bridge.Message{}, err // even if a message is ready
		}
		if len(r.msgs) > 0 {
			m := r.msgs[0]
			r.msgs = r.msgs[1:]
			r.pos[m.Partition] = m.Offset + 1
			return m, nil
		}
		var ev event
		select {
		case ev = <-r.c:
		case <-ctx.Done():
			return bridge.Message{}, ctx.Err()
		case <-r.ctx.Done():
			r.err = errClosed
			continue
		}
		var exp *expiredPartition
		switch {
		case errors.As(ev.err, &exp):
			r.err = expiredError(r.pos, *exp)
		case ev.err != nil:
			r.err = ev.err
		case ev.added != nil:
			for _, o := range ev.added {
				r.pos = append(r.pos, uint64(o))
			}
		default:
			r.msgs = ev.msgs
		}
	}
	return bridge.Message{}, r.err
}

func message(m kafka.Message) bridge.Message {
	var hs []bridge.Header
	if len(m.Headers) > 0 {
		hs = make([]bridge.Header, len(m.Headers))
		for i, h := range m.Headers {
			hs[i] = bridge.Header{Key: h.Key, Value: string(h.Value)}
		}
	}
	return bridge.Message{
		Partition: m.Partition,
		Offset:    uint64(m.Offset),
		Topic:     m.Topic,
		Key:       m.Key,
		Headers:   hs,
		Time:      m.Time,
		Data:      m.Value,
	}
}

// Incarnation implements bridge.Incarnated: the topic's ID, folded to 64
// bits; 0 if the broker gives none.
func (r *reader) Incarnation() uint64 { return r.inc }

// Position returns, for each partition, the offset after the last message
// Next returned from it, or where the reader started it.
func (r *reader) Position() bridge.Position { return slices.Clone(r.pos) }

// Close stops the goroutines and waits for them, which can take up to
// the wait of a fetch (half a second). It is idempotent.
func (r *reader) Close() error {
	r.close.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
	return nil
}
