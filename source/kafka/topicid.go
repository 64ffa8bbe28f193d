package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/esbridge/esbridge/bridge"
)

// A topic's ID, which Kafka (2.8 on) gives each topic it creates, tells a
// topic from one deleted and created again under its name: it is the
// incarnation in event IDs (see bridge.Incarnated). kafka-go's Metadata
// request stops at version 8, and the ID came with version 10, so the
// source asks with a Metadata request of version 12 that it writes and
// reads itself, on kafka-go's connection (protocol.RawExchanger), which
// carries TLS and SASL. A broker older than that gives no ID: the
// incarnation is then 0, unknown, and a topic created again is told by
// its offsets alone (bridge.ErrAhead).

// topicIDVersion is the Metadata version asked for.
const topicIDVersion = 12

// maxTopicIDResponse bounds the size of a response read.
const maxTopicIDResponse = 16 << 20

// A topicMeta is what a Metadata request says of a topic.
type topicMeta struct {
	id         [16]byte // zero if the broker gives none
	partitions int
	// leaders is each partition's leader, by partition; a zero Broker
	// where the partition has none (an election under way) or where the
	// broker gives none (older than Metadata version 12).
	leaders []kafka.Broker
	// brokers is the address of each broker of the cluster.
	brokers []string
}

// leader returns partition id's leader, and false if it is not known.
func (m topicMeta) leader(id int) (kafka.Broker, bool) {
	if id < 0 || id >= len(m.leaders) || m.leaders[id].Host == "" {
		return kafka.Broker{}, false
	}
	return m.leaders[id], true
}

// incarnation returns the topic's ID folded to 64 bits, 0 if unknown.
func (m topicMeta) incarnation() uint64 {
	if m.id == [16]byte{} {
		return 0
	}
	return max(binary.BigEndian.Uint64(m.id[:8])^binary.BigEndian.Uint64(m.id[8:]), 1)
}

// topic asks the brokers for the topic's ID, its number of partitions
// and their leaders, afresh (kafka-go's transport answers its own
// Metadata requests from a cache). It asks every broker it knows of at
// once and takes the first answer, so that a broker that is down, or
// frozen, costs nothing while another answers. It returns
// kafka.UnknownTopicOrPartition, wrapped with ErrUnavailable, if the
// topic does not exist.
func (s *Source) topic(ctx context.Context) (topicMeta, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	addrs := s.knownBrokers()
	type answer struct {
		res *topicIDResponse
		err error
	}
	answers := make(chan answer, len(addrs))
	for _, addr := range addrs {
		go func() {
			res, err := s.transport.RoundTrip(ctx, kafka.TCP(addr), &topicIDRequest{topic: s.cfg.Topic, clientID: "esbridge", newest: &s.metadataVersion})
			r, _ := res.(*topicIDResponse)
			answers <- answer{r, err}
		}()
	}
	var err error
	for range addrs {
		a := <-answers
		if a.err != nil {
			err = a.err
			continue
		}
		s.setConnected(true, nil)
		if a.res.errorCode != 0 {
			return topicMeta{}, fmt.Errorf("kafka: topic %s: %w: %w", s.cfg.Topic, bridge.ErrUnavailable, kafka.Error(a.res.errorCode))
		}
		if len(a.res.meta.brokers) > 0 {
			s.brokers.Store(&a.res.meta.brokers)
		}
		return a.res.meta, nil
	}
	s.setConnected(false, err)
	return topicMeta{}, fmt.Errorf("kafka: topic %s: metadata: %w: %w", s.cfg.Topic, bridge.ErrUnavailable, err)
}

// knownBrokers returns the addresses of the brokers of the configuration
// and of those the last metadata named, once each.
func (s *Source) knownBrokers() []string {
	addrs := slices.Clone(s.cfg.Brokers)
	if seen := s.brokers.Load(); seen != nil {
		for _, b := range *seen {
			if !slices.Contains(addrs, b) {
				addrs = append(addrs, b)
			}
		}
	}
	return addrs
}

// A topicIDRequest is a Metadata request for one topic, of version 12 if
// the broker has it (else answered without asking).
type topicIDRequest struct {
	topic, clientID string
	// newest is the broker's newest Metadata version, learned once with
	// an ApiVersions request (kafka-go's are capped at what it knows).
	newest *atomic.Int32
}

func (r *topicIDRequest) ApiKey() protocol.ApiKey { return protocol.Metadata }

// Required implements protocol.RawExchanger: the request always writes
// itself.
func (r *topicIDRequest) Required(map[protocol.ApiKey]int16) bool { return true }

// RawExchange implements protocol.RawExchanger.
func (r *topicIDRequest) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	const correlationID = 1
	if r.newest.Load() == 0 {
		body, err := exchange(rw, appendAPIVersionsRequest(nil, correlationID, r.clientID))
		if err != nil {
			return nil, err
		}
		v, err := parseAPIVersionsResponse(body, correlationID, int16(protocol.Metadata))
		if err != nil {
			return nil, err
		}
		r.newest.Store(int32(v))
	}
	if r.newest.Load() < topicIDVersion {
		// No ID to ask for: say the topic exists, with no ID, and let
		// kafka-go's metadata tell the rest.
		return &topicIDResponse{}, nil
	}
	body, err := exchange(rw, appendTopicIDRequest(nil, correlationID, r.clientID, r.topic))
	if err != nil {
		return nil, err
	}
	return parseTopicIDResponse(body, correlationID, r.topic)
}

// exchange writes the request frame req and returns the response's body.
func exchange(rw io.ReadWriter, req []byte) ([]byte, error) {
	if _, err := rw.Write(req); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(rw, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > maxTopicIDResponse {
		return nil, fmt.Errorf("kafka: response of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rw, body); err != nil {
		return nil, err
	}
	return body, nil
}

// appendAPIVersionsRequest appends the frame of an ApiVersions request of
// version 0: header v1, no body.
func appendAPIVersionsRequest(b []byte, correlationID int32, clientID string) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0) // the size, below
	b = binary.BigEndian.AppendUint16(b, uint16(protocol.ApiVersions))
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(correlationID))
	b = binary.BigEndian.AppendUint16(b, uint16(len(clientID)))
	b = append(b, clientID...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// parseAPIVersionsResponse returns the newest version of key that an
// ApiVersions response of version 0 lists, 0 if none.
func parseAPIVersionsResponse(b []byte, correlationID int32, key int16) (int16, error) {
	d := decoder{b: b}
	if id := d.int32(); id != correlationID && d.err == nil {
		return 0, fmt.Errorf("kafka: api versions response %d, want %d", id, correlationID)
	}
	if code := d.int16(); code != 0 && d.err == nil {
		return 0, fmt.Errorf("kafka: api versions: %w", kafka.Error(code))
	}
	n := d.int32()
	var newest int16
	for i := int32(0); i < n && d.err == nil; i++ {
		k, _, v := d.int16(), d.int16(), d.int16()
		if k == key {
			newest = v
		}
	}
	if d.err != nil {
		return 0, fmt.Errorf("kafka: api versions response: %w", d.err)
	}
	return newest, nil
}

// appendTopicIDRequest appends the frame of a Metadata request of version
// 12 for topic: request header v2 (client ID a nullable string, then
// tagged fields), body of compact (flexible) fields.
func appendTopicIDRequest(b []byte, correlationID int32, clientID, topic string) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0) // the size, below
	b = binary.BigEndian.AppendUint16(b, uint16(protocol.Metadata))
	b = binary.BigEndian.AppendUint16(b, topicIDVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(correlationID))
	b = binary.BigEndian.AppendUint16(b, uint16(len(clientID)))
	b = append(b, clientID...)
	b = append(b, 0) // header tagged fields
	// topics: a compact array of one: topic ID (zero), compact name, tags
	b = binary.AppendUvarint(b, 2)
	b = append(b, make([]byte, 16)...)
	b = binary.AppendUvarint(b, uint64(len(topic))+1)
	b = append(b, topic...)
	b = append(b, 0)
	b = append(b, 0, 0) // allow_auto_topic_creation, include_topic_authorized_operations
	b = append(b, 0)    // tagged fields
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// A topicIDResponse is what a topicIDRequest learned of its topic.
type topicIDResponse struct {
	errorCode int16
	meta      topicMeta
}

func (r *topicIDResponse) ApiKey() protocol.ApiKey { return protocol.Metadata }

// parseTopicIDResponse reads a Metadata response of version 12 (header v1)
// and returns what it says of topic. A response without it is an error.
func parseTopicIDResponse(b []byte, correlationID int32, topic string) (*topicIDResponse, error) {
	d := decoder{b: b}
	if id := d.int32(); id != correlationID && d.err == nil {
		return nil, fmt.Errorf("kafka: metadata response %d, want %d", id, correlationID)
	}
	d.tags()
	d.int32() // throttle_time_ms
	nodes := map[int32]kafka.Broker{}
	var addrs []string
	for range d.array() { // brokers
		b := kafka.Broker{ID: int(d.int32()), Host: d.string(), Port: int(d.int32())}
		d.string() // rack
		d.tags()
		if b.Host != "" && d.err == nil {
			nodes[int32(b.ID)] = b
			addrs = append(addrs, net.JoinHostPort(b.Host, strconv.Itoa(b.Port)))
		}
	}
	d.string() // cluster_id
	d.int32()  // controller_id
	var res *topicIDResponse
	for range d.array() { // topics
		r := &topicIDResponse{errorCode: d.int16()}
		name := d.string()
		copy(r.meta.id[:], d.bytes(16))
		d.bytes(1) // is_internal
		leaders := map[int32]kafka.Broker{}
		for range d.array() { // partitions
			d.int16() // error_code
			id, leader := d.int32(), d.int32()
			d.int32()     // leader_epoch
			for range 3 { // replica_nodes, isr_nodes, offline_replicas
				d.bytes(4 * d.array())
			}
			d.tags()
			r.meta.partitions++
			if b, ok := nodes[leader]; ok {
				leaders[id] = b
			}
		}
		if len(leaders) > 0 {
			r.meta.leaders = make([]kafka.Broker, r.meta.partitions)
			for id, b := range leaders {
				if id >= 0 && int(id) < r.meta.partitions {
					r.meta.leaders[id] = b
				}
			}
		}
		r.meta.brokers = addrs
		d.int32() // topic_authorized_operations
		d.tags()
		if name == topic && d.err == nil {
			res = r
		}
	}
	d.tags()
	switch {
	case d.err != nil:
		return nil, fmt.Errorf("kafka: metadata response: %w", d.err)
	case res == nil:
		return nil, fmt.Errorf("kafka: metadata response without topic %s", topic)
	}
	return res, nil
}

// A decoder reads the fields of a Kafka response, remembering the first
// error: a field past the end reads as zero.
type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("response cut short")

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.err = firstErr(d.err, errShort)
		d.b = nil
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// firstErr returns err, or other if err is nil.
func firstErr(err, other error) error {
	if err != nil {
		return err
	}
	return other
}

func (d *decoder) int16() int16 {
	if b := d.bytes(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (d *decoder) int32() int32 {
	if b := d.bytes(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err, d.b = errShort, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

// array returns the length of a compact array (0 for null), bounded by
// the bytes left: every element takes one at least.
func (d *decoder) array() int {
	n := d.uvarint()
	if n == 0 {
		return 0
	}
	if n-1 > uint64(len(d.b)) {
		d.err, d.b = firstErr(d.err, errShort), nil
		return 0
	}
	return int(n - 1)
}

// string reads a compact nullable string.
func (d *decoder) string() string {
	n := d.uvarint()
	if n == 0 {
		return ""
	}
	if n-1 > uint64(len(d.b)) {
		d.err, d.b = firstErr(d.err, errShort), nil
		return ""
	}
	return string(d.bytes(int(n - 1)))
}

// tags skips tagged fields.
func (d *decoder) tags() {
	for range d.array1() {
		d.uvarint() // tag
		d.bytes(int(min(d.uvarint(), uint64(len(d.b)+1))))
	}
}

// array1 returns the count of tagged fields: a plain uvarint, bounded by
// the bytes left.
func (d *decoder) array1() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err, d.b = firstErr(d.err, errShort), nil
		return 0
	}
	return int(n)
}

var _ protocol.RawExchanger = (*topicIDRequest)(nil)

// A topicCheck is the outcome of one check of the topic (see
// Source.checkTopic).
type topicCheck struct {
	meta    topicMeta
	err     error
	missing int // checks in a row that found no topic
}

// checkTopic checks the topic for the readers, once a watchInterval for
// all of them (Source.topicCheck): prev is the check before.
func (s *Source) checkTopic(ctx context.Context, prev topicCheck) topicCheck {
	meta, err := s.topic(ctx)
	c := topicCheck{meta: meta, err: err}
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		c.missing = prev.missing + 1
	}
	return c
}
