package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/sharedcheck"
)

// requestTimeout bounds each check of the topic (a metadata request to
// every broker at once), and the dials of kafka-go's transport, when the
// caller's context has no earlier deadline.
const requestTimeout = 10 * time.Second

// A Source is a Kafka topic, read partition by partition without a
// consumer group. It implements [bridge.Source], [bridge.Connectivity]
// and [bridge.Headed] and is safe for concurrent use: any number of readers may be open on it
// at once.
type Source struct {
	cfg       Config
	log       *slog.Logger
	transport *kafka.Transport // metadata and offsets requests
	client    *kafka.Client
	dialer    *kafka.Dialer // the partitions' connections to their leaders

	// connected is the outcome of the last metadata request: whether a
	// broker answered.
	connected atomic.Bool
	// metadataVersion is the brokers' newest Metadata version, once known
	// (see topic).
	metadataVersion atomic.Int32
	// topicCheck checks the topic for the readers, once a watchInterval
	// for all of them, and at once when a partition has lost its leader
	// (see topic).
	topicCheck sharedcheck.Check[topicCheck]
	// brokers is the address of every broker of the cluster, as the last
	// metadata named them: topic asks them all, not only those of the
	// configuration.
	brokers atomic.Pointer[[]string]
}

// New validates cfg and returns a Source. It does not connect: the first
// [Source.Open] does, so New does not fail when the brokers are down.
func New(cfg Config) (*Source, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MetadataInterval == 0 {
		cfg.MetadataInterval = DefaultMetadataInterval
	}
	s := &Source{cfg: cfg, log: cfg.Logger}
	s.topicCheck.Interval = watchInterval
	s.topicCheck.Soonest = leaderCheckInterval
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var mech sasl.Mechanism
	switch cfg.SASL {
	case SASLPlain:
		mech = plain.Mechanism{Username: cfg.User, Password: cfg.Password}
	case SASLSCRAMSHA256, SASLSCRAMSHA512:
		algo := scram.SHA256
		if cfg.SASL == SASLSCRAMSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, cfg.User, cfg.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka: sasl %s: %w", cfg.SASL, err)
		}
		mech = m
	}
	var tlsConfig *tls.Config
	if cfg.TLS {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	s.transport = &kafka.Transport{
		ClientID:    "esbridge",
		DialTimeout: requestTimeout,
		TLS:         tlsConfig,
		SASL:        mech,
		// New partitions must be found by the metadata poll: don't let
		// the transport route by metadata older than that.
		MetadataTTL: cfg.MetadataInterval,
		// Its own metadata requests need name no other topic.
		MetadataTopics: []string{cfg.Topic},
	}
	s.client = &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: s.transport, Timeout: requestTimeout}
	s.dialer = &kafka.Dialer{
		ClientID:      "esbridge",
		Timeout:       requestTimeout,
		DualStack:     true,
		TLS:           tlsConfig,
		SASLMechanism: mech,
	}
	return s, nil
}

// Info describes the stream: "kafka/TOPIC", with history and offsets
// named "offset".
func (s *Source) Info() bridge.Info {
	return bridge.Info{Stream: "kafka/" + s.cfg.Topic, History: true, OffsetName: "offset", Keyed: true}
}

// Connected reports whether a broker answered the last metadata request,
// made by Open and by every open reader each [Config.MetadataInterval];
// the bridge answers /readyz with it. It is false before the first Open.
func (s *Source) Connected() bool { return s.connected.Load() }

// Close releases the source's idle connections. Readers must be closed
// first. Close is idempotent.
func (s *Source) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// Open returns a reader of every partition of the topic, merged, from
// start on:
//
//   - the zero Start reads from each partition's high-water mark when
//     Open asks for it, and Position returns exactly these offsets;
//   - Start.Earliest reads from each partition's first offset;
//   - Start.Position reads partition i from Position[i], and partitions
//     beyond the position's length (added to the topic since) from their
//     first offset. An offset past a partition's high-water mark, which
//     the broker never issued, makes Open return an error wrapping
//     [bridge.ErrAhead]; or, for a partition whose leader could not tell
//     (down or moving) when Open asked, makes Next return it once the
//     partition's new leader tells.
//
// Open returns an error wrapping [bridge.ErrUnavailable] when no broker
// answers or the topic does not exist, and a [*bridge.ExpiredError] when
// an offset of the position is before its partition's first offset, or
// the position has more partitions than the topic. ctx bounds the look-up
// of the partitions and their offsets; the reader lives until Close.
func (s *Source) Open(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	topic, all, err := s.partitions(ctx)
	if err != nil {
		return nil, err
	}
	if start.Position != nil {
		return s.openAt(ctx, topic, all, start.Position)
	}
	offs, err := s.offsets(ctx, topic, all)
	if err != nil {
		return nil, err
	}
	next := make([]int64, len(all))
	for i, o := range offs {
		if start.Earliest {
			next[i] = o.first
		} else {
			next[i] = o.last
		}
	}
	return s.newReader(next, topic, nil), nil
}

// openAt opens a reader at pos (see Open). A partition whose leader does
// not tell its offsets (it is down, or moving) is read from pos all the
// same, so that the others need not wait for it: it checks pos itself,
// against the broker's answer to its first fetch.
func (s *Source) openAt(ctx context.Context, topic topicMeta, all []int, pos bridge.Position) (bridge.Reader, error) {
	n := len(all)
	if len(pos) > n {
		return nil, &bridge.ExpiredError{
			Resume: slices.Clone(pos[:n]),
			Lost:   fmt.Sprintf("kafka: topic %s: position of %d partitions, the topic has %d", s.cfg.Topic, len(pos), n),
		}
	}
	offs, errs := s.someOffsets(ctx, topic, all)
	next := make([]int64, n)
	unchecked := make([]bool, n)
	var exp []expiredPartition
	told := 0
	for i := range next {
		if i < len(pos) && pos[i] > math.MaxInt64 {
			return nil, fmt.Errorf("kafka: topic %s: partition %d: offset %d out of range: %w", s.cfg.Topic, i, pos[i], bridge.ErrBadPosition)
		}
		switch {
		case errs[i] != nil && i < len(pos):
			next[i], unchecked[i] = int64(pos[i]), true
			continue
		case errs[i] != nil:
			return nil, fmt.Errorf("kafka: topic %s: partition %d: offsets: %w: %w", s.cfg.Topic, i, bridge.ErrUnavailable, errs[i])
		case i >= len(pos):
			next[i] = offs[i].first // added to the topic since
			continue
		}
		told++
		p := pos[i]
		if int64(p) > offs[i].last {
			return nil, fmt.Errorf("kafka: topic %s: partition %d: offset %d, the high-water mark is %d: %w", s.cfg.Topic, i, p, offs[i].last, bridge.ErrAhead)
		}
		if int64(p) < offs[i].first {
			exp = append(exp, expiredPartition{topic: s.cfg.Topic, partition: i, offset: p, first: uint64(offs[i].first)})
		}
		next[i] = int64(p)
	}
	if told == 0 && n > 0 {
		// No leader tells: the brokers are down, not one leader.
		return nil, fmt.Errorf("kafka: topic %s: offsets: %w: %w", s.cfg.Topic, bridge.ErrUnavailable, errors.Join(errs...))
	}
	if exp != nil {
		return nil, expiredError(pos, exp...)
	}
	return s.newReader(next, topic, unchecked), nil
}

// partitions returns the topic and the numbers of its partitions.
func (s *Source) partitions(ctx context.Context) (topicMeta, []int, error) {
	topic, err := s.topic(ctx)
	if err != nil {
		return topicMeta{}, nil, err
	}
	if topic.partitions == 0 {
		return topicMeta{}, nil, fmt.Errorf("kafka: topic %s: no partitions: %w", s.cfg.Topic, bridge.ErrUnavailable)
	}
	all := make([]int, topic.partitions)
	for i := range all {
		all[i] = i
	}
	return topic, all, nil
}

func (s *Source) setConnected(up bool, err error) {
	if s.connected.Swap(up) != up {
		if up {
			s.log.Info("kafka: brokers answer", "topic", s.cfg.Topic)
		} else {
			s.log.Warn("kafka: brokers do not answer", "topic", s.cfg.Topic, "err", err)
		}
	}
}

// span is the offsets a partition holds: from first to last, its
// high-water mark, excluded.
type span struct{ first, last int64 }

// listOffsets asks each partition's leader, as topic names it, for the
// offsets of reqs, all the leaders at once, each for at most
// answerTimeout; where topic names no leader (a broker older than
// Metadata version 12), kafka-go's transport routes them. It returns the
// offsets the leaders gave, and the error of each partition whose leader
// did not answer.
func (s *Source) listOffsets(ctx context.Context, topic topicMeta, reqs []kafka.OffsetRequest) ([]kafka.PartitionOffsets, map[int]error) {
	ctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	byLeader := map[string][]kafka.OffsetRequest{}
	for _, r := range reqs {
		addr := ""
		if b, ok := topic.leader(r.Partition); ok {
			addr = net.JoinHostPort(b.Host, strconv.Itoa(b.Port))
		}
		byLeader[addr] = append(byLeader[addr], r)
	}
	var (
		mu   sync.Mutex
		offs []kafka.PartitionOffsets
		errs = map[int]error{}
		wg   sync.WaitGroup
	)
	for addr, rs := range byLeader {
		wg.Go(func() {
			req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{s.cfg.Topic: rs}}
			if addr != "" {
				req.Addr = kafka.TCP(addr)
			}
			res, err := s.client.ListOffsets(ctx, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				for _, r := range rs {
					errs[r.Partition] = err
				}
				return
			}
			offs = append(offs, res.Topics[s.cfg.Topic]...)
		})
	}
	wg.Wait()
	return offs, errs
}

// offsets returns the span of each of the partitions, asking their
// leaders as topic names them, or an error if a leader does not tell.
func (s *Source) offsets(ctx context.Context, topic topicMeta, partitions []int) ([]span, error) {
	spans, errs := s.someOffsets(ctx, topic, partitions)
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("kafka: topic %s: partition %d: offsets: %w: %w", s.cfg.Topic, partitions[i], bridge.ErrUnavailable, err)
		}
	}
	return spans, nil
}

// someOffsets returns the span of each of the partitions whose leader
// tells, and the error of each other one, by index in partitions.
func (s *Source) someOffsets(ctx context.Context, topic topicMeta, partitions []int) ([]span, []error) {
	reqs := make([]kafka.OffsetRequest, 0, 2*len(partitions))
	for _, p := range partitions {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	res, failed := s.listOffsets(ctx, topic, reqs)
	spans := make([]span, len(partitions))
	errs := make([]error, len(partitions))
	found := make([]bool, len(partitions))
	for _, po := range res {
		i := slices.Index(partitions, po.Partition)
		if i < 0 {
			continue
		}
		if po.Error != nil {
			errs[i] = po.Error
			continue
		}
		spans[i] = span{po.FirstOffset, po.LastOffset}
		found[i] = true
	}
	for i, p := range partitions {
		switch {
		case failed[p] != nil:
			errs[i] = failed[p]
		case !found[i] && errs[i] == nil:
			errs[i] = errors.New("no offsets")
		}
	}
	return spans, errs
}

// An expiredPartition is a partition whose messages from offset to
// first, excluded, were deleted by retention.
type expiredPartition struct {
	topic         string
	partition     int
	offset, first uint64
}

func (e *expiredPartition) Error() string {
	return fmt.Sprintf("kafka: topic %s: partition %d: offsets %d to %d deleted", e.topic, e.partition, e.offset, e.first-1)
}

// expiredError returns the error for a reader at pos whose partitions exp
// lost messages: it goes on with each of them at its first offset, and
// loses nothing of the others.
func expiredError(pos bridge.Position, exp ...expiredPartition) *bridge.ExpiredError {
	resume := slices.Clone(pos)
	lost := make([]string, len(exp))
	var missed uint64
	for i, x := range exp {
		if x.partition < len(resume) {
			resume[x.partition] = max(resume[x.partition], x.first)
		}
		lost[i] = x.Error()
		missed += x.first - min(x.offset, x.first)
	}
	return &bridge.ExpiredError{Resume: resume, From: slices.Clone(pos), Lost: strings.Join(lost, "; "), Missed: missed}
}

// spans returns the topic, and the first offset and the high-water mark
// of each of its partitions.
func (s *Source) spans(ctx context.Context) (topicMeta, []span, error) {
	topic, all, err := s.partitions(ctx)
	if err != nil {
		return topicMeta{}, nil, err
	}
	offs, err := s.offsets(ctx, topic, all)
	return topic, offs, err
}

// Head returns where the topic ends: each partition's high-water mark, the
// offset after its last message (see [bridge.Headed]). ctx bounds the
// look-up of the partitions and their offsets.
func (s *Source) Head(ctx context.Context) (bridge.Position, error) {
	_, offs, err := s.spans(ctx)
	if err != nil {
		return nil, err
	}
	n := len(offs)
	head := make(bridge.Position, n)
	for i, o := range offs {
		head[i] = uint64(max(o.last, 0))
	}
	return head, nil
}

// PositionAt returns, for each partition, the offset of its first message
// whose timestamp is at or after t (the broker's time index: the
// producer's CreateTime, or LogAppendTime where the topic says so), or
// its high-water mark where it holds none (see [bridge.Seeker]). ctx
// bounds the look-up of the partitions and their offsets.
func (s *Source) PositionAt(ctx context.Context, t time.Time) (bridge.Position, error) {
	topic, all, err := s.partitions(ctx)
	if err != nil {
		return nil, err
	}
	n := len(all)
	reqs := make([]kafka.OffsetRequest, n)
	for i := range all {
		reqs[i] = kafka.TimeOffsetOf(i, t)
	}
	// The high-water marks first: a message stored after them is newer
	// than t, and the partitions without one at t start there.
	offs, err := s.offsets(ctx, topic, all)
	if err != nil {
		return nil, err
	}
	pos := make(bridge.Position, n)
	for i, o := range offs {
		pos[i] = uint64(max(o.last, 0))
	}
	res, failed := s.listOffsets(ctx, topic, reqs)
	for p, err := range failed {
		return nil, fmt.Errorf("kafka: topic %s: partition %d: offsets at %v: %w: %w", s.cfg.Topic, p, t, bridge.ErrUnavailable, err)
	}
	for _, po := range res {
		if po.Partition < 0 || po.Partition >= n {
			continue
		}
		if po.Error != nil {
			return nil, fmt.Errorf("kafka: topic %s: partition %d: offsets at %v: %w: %w", s.cfg.Topic, po.Partition, t, bridge.ErrUnavailable, po.Error)
		}
		// One offset where a message is at or after t; none (the broker
		// answers -1) where there is none.
		for off := range po.Offsets {
			if off >= 0 && uint64(off) < pos[po.Partition] {
				pos[po.Partition] = uint64(off)
			}
		}
	}
	return pos, nil
}
