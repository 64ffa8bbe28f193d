package bridge

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"slices"
)

// The event IDs of a merged stream (see StreamsPath) carry the event ID of
// every route of the stream that has one: the unpadded base64url encoding
// of
//
//	head   1 byte, streamsIDHead (the version 1 of merged IDs; no
//	       route's ID begins with it)
//	parts  for each route, in ascending order of tag, none twice:
//	       tag     4 bytes, FNV-1a of the route's path
//	       uvarint n, then the n bytes of the route's event ID (that
//	               ID's own base64url, decoded)
//
// Parts are keyed by path, not by the order of the routes in the request:
// a page may list its routes in any order, add one (it starts as a new
// client would) or drop one (its part is dropped). An ID is at most
// MaxStreamsIDLength characters; a longer one is refused unread.
const streamsIDHead = 0xE1

// MaxStreamsIDLength bounds the event IDs of merged streams, in
// characters: a Last-Event-ID longer than this gets a gap on every route
// of the stream, without being decoded. It fits in the 64 KB of headers
// that esbridge reads. Merged IDs are as long as their routes' IDs
// together, plus 5 to 7 characters a route: ordinary routes make IDs of
// tens of characters each; only Kafka topics of thousands of partitions
// in all come near the bound.
const MaxStreamsIDLength = 32 << 10

var errBadStreamsID = errors.New("bridge: malformed merged event ID")

// A streamsID is the decoded state of a merged stream's event ID: the raw
// ID bytes of each route, by tag. It is the stream's esource.MergedID,
// whose parts are the routes in the order of the request: it is owned by
// one stream's writer.
type streamsID struct {
	tags  [][4]byte // ascending
	parts [][]byte  // parts[i] is the ID of tags[i]; nil if it has none
	order []int     // order[k] is the index in tags of the request's route k
	buf   []byte
}

// pathTag returns the tag of a route path in merged IDs.
func pathTag(path string) [4]byte {
	h := fnv.New32a()
	h.Write([]byte(path))
	var t [4]byte
	h.Sum(t[:0])
	return t
}

// newStreamsID returns the state of a stream of routes with tags tags, in
// the request's order, none with an ID yet.
func newStreamsID(tags [][4]byte) *streamsID {
	s := &streamsID{tags: slices.Clone(tags), parts: make([][]byte, len(tags)), order: make([]int, len(tags))}
	slices.SortFunc(s.tags, func(a, b [4]byte) int { return slices.Compare(a[:], b[:]) })
	for k, t := range tags {
		s.order[k] = s.index(t)
	}
	return s
}

// index returns the index of tag in s, or -1.
func (s *streamsID) index(tag [4]byte) int {
	i, ok := slices.BinarySearchFunc(s.tags, tag, func(a, b [4]byte) int { return slices.Compare(a[:], b[:]) })
	if !ok {
		return -1
	}
	return i
}

// Set records id, the event ID of the request's route k, as its part. It
// reports false for an ID that is not unpadded base64url, which a route
// never makes.
func (s *streamsID) Set(k int, id []byte) bool {
	return s.setAt(s.order[k], id)
}

func (s *streamsID) setAt(i int, id []byte) bool {
	n := base64.RawURLEncoding.DecodedLen(len(id))
	b := s.parts[i][:0]
	if cap(b) < n {
		b = make([]byte, n)
	}
	n, err := base64.RawURLEncoding.Decode(b[:n], id)
	if err != nil || n == 0 {
		return false
	}
	s.parts[i] = b[:n]
	return true
}

// drop forgets the part of tag.
func (s *streamsID) drop(tag [4]byte) {
	if i := s.index(tag); i >= 0 {
		s.parts[i] = nil
	}
}

// get returns the route's event ID of tag, "" if it has none.
func (s *streamsID) get(tag [4]byte) string {
	i := s.index(tag)
	if i < 0 || s.parts[i] == nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(s.parts[i])
}

// AppendID appends the merged ID of s to dst, nothing if no route has an
// ID, and reports false if it would be longer than MaxStreamsIDLength.
func (s *streamsID) AppendID(dst []byte) ([]byte, bool) {
	b := append(s.buf[:0], streamsIDHead)
	for i, p := range s.parts {
		if p == nil {
			continue
		}
		b = append(b, s.tags[i][:]...)
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	s.buf = b
	if len(b) == 1 {
		return dst, true
	}
	if base64.RawURLEncoding.EncodedLen(len(b)) > MaxStreamsIDLength {
		return dst, false
	}
	return base64.RawURLEncoding.AppendEncode(dst, b), true
}

// decode sets the parts of s from id, a merged ID, keeping those of the
// routes of s and ignoring the others. It returns errBadStreamsID, and
// sets nothing, for an ID it cannot read: too long, not base64url, of
// another version, with no part, parts out of order, repeated, longer than a
// route's ID may be, or trailing bytes.
func (s *streamsID) decode(id string) error {
	if len(id) > MaxStreamsIDLength {
		return errBadStreamsID
	}
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) < 2 || b[0] != streamsIDHead {
		return errBadStreamsID
	}
	b = b[1:]
	type part struct {
		i  int
		id []byte
	}
	var found []part
	var prev []byte
	for len(b) > 0 {
		if len(b) < 4 || prev != nil && slices.Compare(prev, b[:4]) >= 0 {
			return errBadStreamsID
		}
		tag := [4]byte(b[:4])
		prev, b = b[:4], b[4:]
		n, k := binary.Uvarint(b)
		if k <= 0 || n == 0 || n > maxIDBytes || n > uint64(len(b)-k) {
			return errBadStreamsID
		}
		p := b[k : k+int(n)]
		b = b[k+int(n):]
		if i := s.index(tag); i >= 0 {
			found = append(found, part{i, p})
		}
	}
	for _, p := range found {
		s.parts[p.i] = slices.Clone(p.id)
	}
	return nil
}
