package bridge

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
)

// Event IDs are opaque, versioned, URL-safe tokens: the unpadded base64url
// encoding of
//
//	head     1 byte: the version (2) times 16, plus the kind
//	         (kindPosition, kindLive, kindOrigin or kindEvent)
//	stream   4 bytes, FNV-1a of Info.Stream
//	incarn.  2 bytes, of the stream's incarnation (see Incarnated), 0
//	         where the source tells none
//	body     kindPosition: uvarint n, then the n next offsets of the
//	         Position: the first as a uvarint, each other as the zigzag
//	         varint of its difference from the one before;
//	         kindEvent: uvarint partition of the event, then as
//	         kindPosition (streams of several partitions);
//	         kindLive: uvarint instance epoch, uvarint sequence;
//	         kindOrigin: nothing (the start of the stream)
//
// Version 1, without the incarnation, is still read, as of incarnation 0.
//
// A JetStream sequence of 1,000,000 makes a 15-character ID; a Kafka topic
// of 12 partitions at ten-digit offsets, at most 92 characters. A stream
// has at most MaxPartitions partitions, so no ID is longer than
// maxIDLength: the header, two uvarints of at most 2 bytes, and 10 bytes
// (a 64-bit varint) for each offset, in base64.
const (
	idVersion = 2

	kindPosition = 0
	kindLive     = 1
	kindOrigin   = 2
	kindEvent    = 3
)

// MaxPartitions is the most partitions a stream may have: its event IDs
// carry an offset for each.
const MaxPartitions = 1024

// maxIDLength is the length of the longest event ID, 13,669 characters:
// maxIDBytes in unpadded base64. Longer IDs are refused without being
// decoded.
const (
	maxIDBytes  = 7 + 2 + 2 + 10*MaxPartitions
	maxIDLength = (maxIDBytes*8 + 5) / 6
)

// A codec encodes and decodes the event IDs of one incarnation of a
// stream.
type codec struct {
	tag [4]byte
	inc uint16 // the incarnation's tag, 0 for none
}

func newCodec(stream string) codec {
	h := fnv.New32a()
	h.Write([]byte(stream))
	var c codec
	h.Sum(c.tag[:0])
	return c
}

// incarnation returns the codec of the stream's incarnation inc (0 for
// none).
func (c codec) incarnation(inc uint64) codec {
	c.inc = incarnationTag(inc)
	return c
}

// incarnationTag returns the 2 bytes of an incarnation that IDs carry:
// enough to tell one from the one before, never 0 for an incarnation.
func incarnationTag(inc uint64) uint16 {
	if inc == 0 {
		return 0
	}
	h := fnv.New32a()
	h.Write(binary.BigEndian.AppendUint64(nil, inc))
	t := uint16(h.Sum32())
	return max(t, 1)
}

// An eventID is a decoded event ID.
type eventID struct {
	kind       byte
	inc        uint16   // the incarnation's tag, 0 if unknown
	partition  int      // kindEvent
	pos        Position // kindPosition, kindEvent
	epoch, seq uint64   // kindLive
	merged     bool     // made by Merge, which may change it in place
	heal       bool     // a client of the snapshot view: a fresh snapshot rather than an expired gap
}

// samePosition reports whether t and u name the same position.
func (t *eventID) samePosition(u *eventID) bool {
	return t.inc == u.inc && (t.kind == kindOrigin) == (u.kind == kindOrigin) && slices.Equal(t.pos, u.pos)
}

func (c codec) header(kind byte) []byte {
	return c.appendHeader(nil, kind)
}

func (c codec) appendHeader(b []byte, kind byte) []byte {
	return append(b, idVersion<<4|kind, c.tag[0], c.tag[1], c.tag[2], c.tag[3], byte(c.inc>>8), byte(c.inc))
}

func (c codec) encode(b []byte) string {
	return base64.RawURLEncoding.EncodeToString(b)
}

// position returns the ID of a point in a stream with history.
func (c codec) position(p Position) string {
	return c.encode(appendPosition(c.header(kindPosition), p))
}

// event returns the ID of a message of partition in a stream of several
// partitions: the position after it, and its partition.
func (c codec) event(p Position, partition int) string {
	return c.encode(c.appendEvent(nil, p, partition))
}

func (c codec) appendEvent(b []byte, p Position, partition int) []byte {
	b = binary.AppendUvarint(c.appendHeader(b, kindEvent), uint64(partition))
	return appendPosition(b, p)
}

// appendMessage appends to b the ID, unencoded, of a message of partition
// that brought the stream to p: a position in a stream of one partition,
// else an event.
func (c codec) appendMessage(b []byte, p Position, partition int) []byte {
	if len(p) == 1 {
		return appendPosition(c.appendHeader(b, kindPosition), p)
	}
	return c.appendEvent(b, p, partition)
}

// An idEncoder encodes the IDs of a reader's messages into buffers it
// reuses, so that an ID costs one allocation, its string, or none.
type idEncoder struct {
	c         codec
	raw, text []byte
}

// message returns the ID of a message of partition that brought the
// stream to p: a position in a stream of one partition, else an event.
func (e *idEncoder) message(p Position, partition int) string {
	return string(e.append(p, partition))
}

// append is message, returning the ID in a buffer of e's that the next
// call reuses.
func (e *idEncoder) append(p Position, partition int) []byte {
	e.raw = e.c.appendMessage(e.raw[:0], p, partition)
	e.text = base64.RawURLEncoding.AppendEncode(e.text[:0], e.raw)
	return e.text
}

func appendPosition(b []byte, p Position) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	for i, off := range p {
		if i == 0 {
			b = binary.AppendUvarint(b, off)
		} else {
			b = binary.AppendVarint(b, int64(off-p[i-1]))
		}
	}
	return b
}

// live returns the ID of a message of a stream without history.
func (c codec) live(epoch, seq uint64) string {
	b := binary.AppendUvarint(c.header(kindLive), epoch)
	return c.encode(binary.AppendUvarint(b, seq))
}

// origin returns the ID of the start of the stream.
func (c codec) origin() string {
	return c.encode(c.header(kindOrigin))
}

// decode decodes an ID of this stream. It returns errMalformedID or
// errOtherStream, wrapped with the ID.
func (c codec) decode(id string) (eventID, error) {
	b, err := base64.RawURLEncoding.DecodeString(id)
	head := 7
	if err == nil && len(b) > 0 && b[0]>>4 == 1 {
		head = 5 // version 1: no incarnation
	}
	if err != nil || len(b) < head || b[0]>>4 != idVersion && head == 7 {
		return eventID{}, fmt.Errorf("%w: %q", errMalformedID, id)
	}
	if [4]byte(b[1:5]) != c.tag {
		return eventID{}, fmt.Errorf("%w: %q", errOtherStream, id)
	}
	t := eventID{kind: b[0] & 0xf}
	if head == 7 {
		t.inc = binary.BigEndian.Uint16(b[5:7])
	}
	r := varints{b: b[head:]}
	switch t.kind {
	case kindEvent, kindPosition:
		if t.kind == kindEvent {
			t.partition = int(min(r.uvarint(), 1<<31))
		}
		n := r.uvarint()
		if n > uint64(len(r.b)) || n > MaxPartitions { // each offset takes a byte at least
			return eventID{}, fmt.Errorf("%w: %q", errMalformedID, id)
		}
		if t.kind == kindEvent && uint64(t.partition) >= n {
			r.bad = true
			break
		}
		t.pos = make(Position, n)
		for i := range t.pos {
			if i == 0 {
				t.pos[i] = r.uvarint()
			} else {
				t.pos[i] = t.pos[i-1] + uint64(r.varint())
			}
		}
	case kindLive:
		t.epoch, t.seq = r.uvarint(), r.uvarint()
	case kindOrigin:
	default:
		r.bad = true
	}
	if r.bad || len(r.b) != 0 {
		return eventID{}, fmt.Errorf("%w: %q", errMalformedID, id)
	}
	return t, nil
}

// varints reads varints from b, remembering the first failure.
type varints struct {
	b   []byte
	bad bool
}

func (r *varints) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad, r.b = true, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *varints) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad, r.b = true, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}
