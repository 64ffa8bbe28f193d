package bridge

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestIDRoundTrip(t *testing.T) {
	c := newCodec("jetstream/ORDERS")
	positions := []Position{
		{1},
		{1000000},
		{0, 0, 0},
		{9999999999, 9999999000, 9999999999, 10, 1 << 63, 0},
		{^uint64(0), 0, ^uint64(0)},
	}
	for _, p := range positions {
		id := c.position(p)
		tok, err := c.decode(id)
		if err != nil || tok.kind != kindPosition || !slices.Equal(tok.pos, p) {
			t.Errorf("decode(position(%v)) = %+v, %v", p, tok, err)
		}
		if strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Errorf("ID %q is not URL-safe", id)
		}
	}
	tok, err := c.decode(c.live(7, 42))
	if err != nil || tok.kind != kindLive || tok.epoch != 7 || tok.seq != 42 {
		t.Errorf("live: %+v, %v", tok, err)
	}
	tok, err = c.decode(c.origin())
	if err != nil || tok.kind != kindOrigin {
		t.Errorf("origin: %+v, %v", tok, err)
	}
}

func TestIDLength(t *testing.T) {
	c := newCodec("kafka/orders")
	if id := c.incarnation(1).position(Position{1000000}); len(id) > 15 {
		t.Errorf("sequence 1,000,000: ID %q has %d characters, want at most 15", id, len(id))
	}
	// Twelve partitions at ten-digit offsets, far apart.
	p := Position{9876543210, 1234567890, 5555555555, 9999999999, 1000000000, 4242424242,
		8080808080, 3141592653, 2718281828, 1414213562, 6666666666, 7777777777}
	if id := c.event(p, 11); len(id) > 100 {
		t.Errorf("12 partitions: ID %q has %d characters, want at most 100", id, len(id))
	}
	tok, err := c.decode(c.event(p, 11))
	if err != nil || tok.kind != kindEvent || tok.partition != 11 || !slices.Equal(tok.pos, p) {
		t.Errorf("event ID: %+v, %v", tok, err)
	}
}

func TestIDRejects(t *testing.T) {
	c := newCodec("jetstream/ORDERS")
	other := newCodec("jetstream/PAYMENTS")
	tests := []struct {
		id   string
		want error
	}{
		{"", errMalformedID},
		{"42", errMalformedID},
		{"not base64!", errMalformedID},
		{other.position(Position{5}), errOtherStream},
		{other.live(1, 2), errOtherStream},
		{c.position(Position{5}) + "AA", errMalformedID},                    // trailing bytes
		{c.position(Position{5})[:8], errMalformedID},                       // cut short
		{"Mg" + c.position(Position{5})[2:], errMalformedID},                // another version
		{c.encode(append(c.header(9), 1)), errMalformedID},                  // unknown kind
		{c.encode(append(c.header(kindPosition), 200)), errMalformedID},     // too many offsets
		{c.encode(append(c.header(kindEvent), 3, 2, 1, 1)), errMalformedID}, // partition 3 of 2
	}
	for _, tt := range tests {
		if _, err := c.decode(tt.id); !errors.Is(err, tt.want) {
			t.Errorf("decode(%q): %v, want %v", tt.id, err, tt.want)
		}
	}
}

// FuzzIDDecode checks that decoding never panics and that whatever decodes
// encodes back to an ID with the same meaning.
func FuzzIDDecode(f *testing.F) {
	c := newCodec("s")
	f.Add(c.position(Position{1, 2, 3}))
	f.Add(c.live(1, 2))
	f.Add(c.origin())
	f.Add(c.event(Position{4, 5, 6}, 2))
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, id string) {
		tok, err := c.decode(id)
		if err != nil {
			return
		}
		var again string
		switch tok.kind {
		case kindPosition:
			again = c.position(tok.pos)
		case kindLive:
			again = c.live(tok.epoch, tok.seq)
		case kindOrigin:
			again = c.origin()
		case kindEvent:
			again = c.event(tok.pos, tok.partition)
		}
		tok2, err := c.decode(again)
		if err != nil || tok2.kind != tok.kind || !slices.Equal(tok2.pos, tok.pos) || tok2.partition != tok.partition || tok2.epoch != tok.epoch || tok2.seq != tok.seq {
			t.Errorf("%q decodes to %+v, which encodes to %q, which decodes to %+v, %v", id, tok, again, tok2, err)
		}
	})
}

// FuzzIDPosition checks that positions round-trip.
func FuzzIDPosition(f *testing.F) {
	f.Add(uint64(1), uint64(2), uint64(3))
	f.Fuzz(func(t *testing.T, a, b, c uint64) {
		cd := newCodec("s")
		p := Position{a, b, c}
		tok, err := cd.decode(cd.position(p))
		if err != nil || !slices.Equal(tok.pos, p) {
			t.Errorf("%v: %+v, %v", p, tok, err)
		}
	})
}

// checkEncoder checks that e, reused, encodes the ID of a message of
// partition at p as the codec does, and that it decodes back.
func checkEncoder(t *testing.T, e *idEncoder, p Position, partition int) {
	t.Helper()
	got := e.message(p, partition)
	want, kind := e.c.event(p, partition), byte(kindEvent)
	if len(p) == 1 {
		want, kind = e.c.position(p), kindPosition
	}
	if got != want {
		t.Fatalf("message(%v, %d) = %q, want %q", p, partition, got, want)
	}
	tok, err := e.c.decode(got)
	if err != nil || tok.kind != kind || !slices.Equal(tok.pos, p) || kind == kindEvent && tok.partition != partition {
		t.Fatalf("decode(message(%v, %d)) = %+v, %v", p, partition, tok, err)
	}
}

func TestIDEncoder(t *testing.T) {
	e := idEncoder{c: newCodec("kafka/orders")}
	// One encoder in turn: longer IDs, then shorter, must not leave bytes
	// of each other.
	tests := []struct {
		p         Position
		partition int
	}{
		{Position{1}, 0},
		{Position{1000000}, 0},
		{Position{0, 0, 0}, 1},
		{Position{9876543210, 1234567890, 5555555555, 9999999999, 1000000000, 4242424242,
			8080808080, 3141592653, 2718281828, 1414213562, 6666666666, 7777777777}, 11},
		{Position{5, 3}, 1},
		{Position{^uint64(0), 0, ^uint64(0)}, 2},
		{Position{0}, 0},
	}
	for _, tt := range tests {
		checkEncoder(t, &e, tt.p, tt.partition)
	}
}

// FuzzIDEncoder checks the encoder against the codec on positions of up
// to four partitions, encoded in the buffers of a longer ID, then moved
// by a message.
func FuzzIDEncoder(f *testing.F) {
	f.Add(uint64(0), uint64(0), uint64(0), uint64(0), uint8(4), uint8(0))
	f.Add(uint64(1e6), uint64(5), ^uint64(0), uint64(1), uint8(1), uint8(3))
	f.Add(uint64(9999999999), uint64(1), uint64(9999999999), uint64(0), uint8(3), uint8(2))
	long := Position{9876543210, 1234567890, 5555555555, 9999999999, 1000000000, 4242424242}
	f.Fuzz(func(t *testing.T, a, b, c, d uint64, n, partition uint8) {
		e := idEncoder{c: newCodec("kafka/orders")}
		checkEncoder(t, &e, long, 5)
		p := Position{a, b, c, d}[:1+n%4]
		checkEncoder(t, &e, p, int(partition)%len(p))
		// The same position as moved by one message of the partition.
		i := int(partition) % len(p)
		p[i]++
		checkEncoder(t, &e, p, i)
	})
}

// TestMaxIDLength checks that the longest ID the codec issues, of
// MaxPartitions partitions at the largest offsets, is maxIDLength long.
func TestMaxIDLength(t *testing.T) {
	c := newCodec("kafka/t")
	pos := make(Position, MaxPartitions)
	for i := range pos {
		pos[i] = math.MaxUint64 >> (i % 2) // every difference a 10-byte varint
	}
	id := c.event(pos, MaxPartitions-1)
	if len(id) != maxIDLength {
		t.Errorf("longest ID: %d characters, maxIDLength %d", len(id), maxIDLength)
	}
	if _, err := c.decode(id); err != nil {
		t.Errorf("decode of the longest ID: %v", err)
	}
	if _, err := c.decode(c.position(append(pos, 1))); err == nil {
		t.Errorf("a position of %d partitions decoded", MaxPartitions+1)
	}
}

func TestMissedBy(t *testing.T) {
	exp := &ExpiredError{From: Position{10, 20}, Resume: Position{15, 30}, Missed: 15}
	for _, tt := range []struct {
		pos  Position
		want uint64
	}{
		{Position{10, 20}, 15}, // where the reader stood: all
		{Position{5, 20}, 15},  // behind it
		{Position{12, 20}, 13}, // had received two of the first partition's
		{Position{12, 25}, 8},
		{Position{15, 29}, 1},
	} {
		if got := exp.missedBy(tt.pos); got != tt.want {
			t.Errorf("missedBy(%v) = %d, want %d", tt.pos, got, tt.want)
		}
	}
	// A count that is not the span of offsets (a filtered stream's): a
	// client past From in some partition missed an unknown part of it.
	sparse := &ExpiredError{From: Position{10}, Resume: Position{100}, Missed: 7}
	if got := sparse.missedBy(Position{10}); got != 7 {
		t.Errorf("sparse, at From: %d, want 7", got)
	}
	if got := sparse.missedBy(Position{50}); got != 0 {
		t.Errorf("sparse, past From: %d, want 0 (unknown)", got)
	}
}
