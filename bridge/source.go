package bridge

import (
	"context"
	"errors"
	"time"
)

// A Source is one broker stream that a route serves: a JetStream stream, a
// NATS subject, a Kafka topic, a RabbitMQ stream or queue. A source knows
// nothing of HTTP or SSE; the bridge opens readers on it, one live reader
// per route and a short-lived one per client that must catch up.
//
// # Connections
//
// A source's constructor validates its configuration and connects to
// nothing, so that a bad configuration fails at once and alone. The source
// connects at its first Open and from then on keeps its connections up by
// itself, in the background; while the broker cannot be reached, Open
// returns an error wrapping ErrUnavailable (the first Open waits, within
// its ctx, for the first attempt) and a [Connectivity] source reports
// false. The context of Open bounds the opening only (dialling,
// subscribing, looking up offsets): the reader it returns lives until its
// Close, and each Next is bounded by its own context.
//
// Implementations must be safe for concurrent use.
type Source interface {
	// Info describes the stream. It is called once, when the route is made.
	Info() Info

	// Open returns a reader of the stream's messages, in broker order,
	// from start on. It returns an error wrapping ErrNoHistory for a start
	// position on a source without history, ErrUnavailable while the
	// broker cannot be reached, so that the bridge retries, an
	// [*ExpiredError] for a position the broker no longer holds, and
	// ErrAhead for one it never issued, where it can tell, and
	// ErrBadPosition for one it can never have. ctx bounds the opening
	// only.
	Open(ctx context.Context, start Start) (Reader, error)

	// Close releases the source's connections. Readers must be closed first.
	Close() error
}

// A Connectivity is a Source that can tell whether its broker connection is
// up. While a source reports false, /readyz answers 503, even if its readers
// merely wait for the connection to come back.
type Connectivity interface {
	Connected() bool
}

// A Staller is a Reader that reads several partitions independently and
// can tell which of them it cannot read for now, while it reads the
// others: a Kafka partition whose leader is down, say. The bridge shows
// them on /readyz and in its figures ([RouteStats].Stalled), and a route
// stays ready while most of its partitions are read.
type Staller interface {
	// Stalled returns the partitions the reader has been failing to
	// read, by partition; none while it reads them all. It must not
	// block: the bridge calls it from other goroutines than Next's.
	Stalled() []Stall
}

// A Stall is a partition that a reader cannot read for now.
type Stall struct {
	Partition int
	// Since is when the partition's reads began to fail.
	Since time.Time
	// Err is the last failure.
	Err error
}

// A Seeker is a Source that can find where a time falls in its stream, so
// that a client may start from a time (the since query parameter): the
// bridge looks the time up once, then serves the client as one resuming
// from that position.
type Seeker interface {
	// PositionAt returns the position of the first message the broker
	// stored at or after t: for each partition, the offset of its first
	// message at or after t, or its next offset where it holds none. A
	// time before the oldest message gives the start of the stream. It
	// may return nil where the source cannot tell the head of the stream
	// and no message is at or after t: the client then starts with the
	// next message to arrive. It returns an error wrapping ErrUnavailable
	// while the broker cannot be reached. ctx bounds the look-up.
	PositionAt(ctx context.Context, t time.Time) (Position, error)
}

// A Subjected is a Source whose broker tells which subjects its stream
// takes, where that may be narrower than [Info.Subject] says (a JetStream
// stream read whole has Info.Subject ">", and takes the subjects of its
// configuration). A client's ?subject= that no subject of the stream can
// match is then refused with 400, as one outside Info.Subject is, rather
// than served nothing for ever.
type Subjected interface {
	// StreamSubjects returns the subjects, wildcards allowed, that the
	// stream's messages can have, as the source last learnt them from the
	// broker; nil where it does not know them (before it has connected,
	// or for a stream whose messages may have other subjects). It must
	// not block: the bridge calls it for each client that asks for a
	// subject. The caller must not modify the slice.
	StreamSubjects() []string
}

// An Incarnated is a Reader that can tell which incarnation of its stream
// it reads: a stream deleted and created again under the same name (a
// JetStream stream, a Kafka topic) is another incarnation, whose positions
// mean other messages. Event IDs carry a few bytes of it, so that an ID of
// an earlier incarnation is answered with a gap event (reason
// "stream-reset") and the new stream from its first message, rather than
// read as a position in the new one. Sources whose broker tells no
// incarnation (RabbitMQ) return ErrReset where they notice a deletion,
// and ErrAhead for a position beyond the new stream's head.
type Incarnated interface {
	// Incarnation identifies the stream's incarnation (the JetStream
	// stream's creation time, say); 0 if unknown.
	Incarnation() uint64
}

// Info describes a source's stream.
type Info struct {
	// Stream names the stream, e.g. "jetstream/ORDERS". It is part of every
	// event ID, so that an ID from one stream is never read as a position
	// in another. Two bridges serving the same stream must agree on it.
	Stream string

	// History reports whether the broker keeps the stream's messages, so
	// that Open accepts a position. Without it, event IDs carry an instance
	// epoch and a sequence, and a resume that the in-memory log cannot
	// serve is announced with a gap event.
	History bool

	// Partitions is the stream's number of partitions where it is fixed:
	// 1 for a JetStream or RabbitMQ stream. 0 where it may change, as a
	// Kafka topic's does (Open then judges a position's partitions).
	// Together with FirstOffset it is the shape that a client's position
	// is checked against when the client connects: a position the stream
	// cannot have gets a gap, and never a reader.
	Partitions int

	// FirstOffset is the least offset a message of the stream can have:
	// 1 for JetStream, whose sequences start at 1; 0 for Kafka and
	// RabbitMQ.
	FirstOffset uint64

	// OffsetName is what the envelope format calls Message.Offset:
	// "sequence" for JetStream, "offset" for Kafka and RabbitMQ.
	OffsetName string

	// Subject is the NATS subject, wildcards allowed, that every message
	// of the stream matches, for a source whose clients may ask for the
	// messages of a narrower subject (?subject=, see ServeHTTP): ">" for
	// a whole JetStream stream, whose subjects a [Subjected] source tells
	// once it has read them. Empty for other sources.
	Subject string

	// Keyed reports whether the messages have keys that clients may ask
	// for (?key=, see ServeHTTP): Kafka's.
	Keyed bool
}

// A Reader reads a stream's messages in order. It is used by one goroutine
// at a time.
type Reader interface {
	// Next returns the next message, waiting for one until ctx ends. After
	// an error wrapping ErrLost (a source without history lost messages
	// while reconnecting) the reader goes on. After any other error the
	// bridge closes it and opens a new one: at the error's Resume for an
	// [*ExpiredError] (retention deleted what was next), else where it
	// left off.
	// Next may be called again after it returned ctx's error, and loses
	// no message to it.
	Next(ctx context.Context) (Message, error)

	// Position returns where the reader stands: for each partition, the
	// offset of the next message it will return, as far as it knows.
	// Sources without history return nil.
	Position() Position

	// Close releases the reader: its subscription, consumer or connections
	// on the broker. It is idempotent.
	Close() error
}

// A Message is one broker message.
type Message struct {
	// Partition is the message's partition (Kafka); 0 for streams of one.
	Partition int
	// Offset is the message's position in its partition: the JetStream
	// stream sequence, the Kafka or RabbitMQ stream offset. Sources
	// without history leave it 0.
	Offset uint64
	// Subject is the NATS subject or the AMQP routing key.
	Subject string
	// Topic is the Kafka topic.
	Topic string
	// Key is the Kafka message key.
	Key []byte
	// Headers are the message headers, in broker order.
	Headers []Header
	// Time is when the broker stored the message, if it says.
	Time time.Time
	// Data is the payload.
	Data []byte
}

// A Header is one message header.
type Header struct {
	Key, Value string
}

// A Position is a point in a stream: for each partition, the offset of the
// next message to read. Streams of one partition have a Position of length 1.
type Position []uint64

// Start says where a Reader begins: at Position when it is set, else at the
// earliest message the broker holds when Earliest is set, else with the next
// message to arrive.
type Start struct {
	Position Position
	Earliest bool
	// Live marks the route's one live reader, which a source may serve
	// apart from the readers that catch clients up (on a connection of its
	// own, say), so that no replay can starve it.
	Live bool
}

// Errors of sources and of the bridge. Test for them with errors.Is.
var (
	// ErrNoHistory is returned by Open for a position on a source whose
	// broker keeps no history.
	ErrNoHistory = errors.New("bridge: source keeps no history")

	// ErrUnavailable is returned while the broker cannot be reached or the
	// stream does not exist; the bridge retries with backoff.
	ErrUnavailable = errors.New("bridge: source unavailable")

	// ErrLost is returned by Reader.Next when messages were lost, as when
	// a source without history reconnects; the reader goes on after it.
	ErrLost = errors.New("bridge: messages lost")

	// ErrAhead is returned by Open for a position beyond the head of the
	// stream: one the broker never issued, so that a reader there would
	// wait for good. The bridge tells the client with a gap event and
	// serves it live.
	ErrAhead = errors.New("bridge: position beyond the head of the stream")

	// ErrBadPosition is returned by Open for a position the stream can
	// never have: a JetStream sequence 0, a position of more partitions
	// than a stream has, an offset out of range. It is final: the bridge
	// tells the client with a gap event (reason "malformed-id") and never
	// tries that position again, so a crafted event ID cannot hold a
	// catch-up reader.
	ErrBadPosition = errors.New("bridge: position the stream cannot have")

	// ErrReset is returned by Reader.Next when the stream was deleted, or
	// deleted and created again. The bridge marks the route not ready
	// while Open fails (as it does, with ErrUnavailable, while the stream
	// does not exist), then sends every client a gap event (reason
	// "stream-reset") and the new stream from its first message.
	ErrReset = errors.New("bridge: stream deleted or created again")

	// ErrExpired is wrapped by every [*ExpiredError].
	ErrExpired = errors.New("bridge: position expired")

	// errOtherStream and errMalformedID tell why an event ID cannot be
	// resumed from. They reach a client only as the reason of a gap
	// event, so they are not exported.
	errOtherStream = errors.New("bridge: event ID of another stream")
	errMalformedID = errors.New("bridge: malformed event ID")
)

// An ExpiredError is returned by Open, or by Reader.Next, when the broker
// no longer holds messages the reader was to read: retention deleted
// them. The bridge tells the clients that missed them with a gap event
// and goes on from Resume. It wraps ErrExpired.
type ExpiredError struct {
	// Resume is where to go on from: the reader's position with each
	// partition that lost messages moved to the first offset the broker
	// still holds. Nil means the earliest message the broker holds.
	Resume Position
	// Lost says what was lost, for logs: the stream, partitions and
	// offsets, as the source knows them.
	Lost string
	// From is where the reader stood, the first position lost, if the
	// source says.
	From Position
	// Missed is how many messages were lost, if the source knows: the gap
	// event says it.
	Missed uint64
}

// missedBy returns how many of the lost messages a client at pos had not
// received: all of them if it stood at or before From; else, where Missed
// counts the offsets from From to Resume, those past pos; else 0, unknown.
func (e *ExpiredError) missedBy(pos Position) uint64 {
	if e.From == nil || covers(e.From, pos) {
		return e.Missed
	}
	var span, missed uint64
	for p, resume := range e.Resume {
		from, client := offsetOf(e.From, p), offsetOf(pos, p)
		if resume > from {
			span += resume - from
		}
		if resume > max(from, client) {
			missed += resume - max(from, client)
		}
	}
	if span != e.Missed {
		return 0
	}
	return missed
}

// offsetOf returns the offset of partition p in pos, 0 if it has none.
func offsetOf(pos Position, p int) uint64 {
	if p < len(pos) {
		return pos[p]
	}
	return 0
}

// Error says what was lost.
func (e *ExpiredError) Error() string {
	if e.Lost == "" {
		return ErrExpired.Error()
	}
	return e.Lost + ": " + ErrExpired.Error()
}

// Unwrap returns ErrExpired.
func (e *ExpiredError) Unwrap() error { return ErrExpired }
