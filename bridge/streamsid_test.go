package bridge

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestStreamsIDRoundTrip(t *testing.T) {
	a, b, c := pathTag("/a"), pathTag("/b"), pathTag("/c")
	ids := newStreamsID([][4]byte{a, b, c})
	if id, ok := ids.encode(); !ok || id != "" {
		t.Fatalf("no part: got %q, %v; want an empty ID", id, ok)
	}
	ja := newCodec("js/A").position(Position{42})
	kb := newCodec("kafka/B").event(Position{7, 1 << 40, 3}, 1)
	if !ids.set(a, ja) || !ids.set(b, kb) {
		t.Fatal("set refused a route's ID")
	}
	if ids.set(pathTag("/other"), ja) {
		t.Fatal("set took the ID of a route not in the stream")
	}
	if ids.set(c, "not base64url!") {
		t.Fatal("set took an ID that no route makes")
	}
	id, ok := ids.encode()
	if !ok || id == "" || strings.ContainsAny(id, "+/=") {
		t.Fatalf("encode: %q, %v; want an unpadded base64url ID", id, ok)
	}

	// Read back by a stream of the same routes in another order, and by
	// one that dropped /a and added /d.
	for _, tags := range [][][4]byte{{c, b, a}, {b, pathTag("/d")}} {
		got := newStreamsID(tags)
		if err := got.decode(id); err != nil {
			t.Fatalf("decode %q: %v", id, err)
		}
		for _, tag := range tags {
			want := map[[4]byte]string{a: ja, b: kb}[tag]
			if g := got.get(tag); g != want {
				t.Errorf("part %x: got %q, want %q", tag, g, want)
			}
		}
	}
}

func TestStreamsIDBounds(t *testing.T) {
	tags := make([][4]byte, MaxStreamsRoutes)
	for i := range tags {
		tags[i] = pathTag("/r" + string(rune('a'+i)))
	}
	// Sixteen IDs of 1,024 partitions at large offsets pass the bound:
	// encode refuses to make the ID.
	ids := newStreamsID(tags)
	big := make(Position, MaxPartitions)
	for i := range big {
		big[i] = uint64(i%2) << 62 // differences of 10 bytes
	}
	long := newCodec("kafka/T").position(big)
	for _, tag := range tags {
		ids.set(tag, long)
	}
	if id, ok := ids.encode(); ok || id != "" {
		t.Fatalf("an ID of %d parts of %d characters: got ok=%v, want refused", len(tags), len(long), ok)
	}
	// Two of them fit.
	ids = newStreamsID(tags[:2])
	ids.set(tags[0], long)
	ids.set(tags[1], long)
	id, ok := ids.encode()
	if !ok || len(id) > MaxStreamsIDLength {
		t.Fatalf("two parts of %d characters: ok=%v, length %d", len(long), ok, len(id))
	}
	if err := newStreamsID(tags[:2]).decode(id); err != nil {
		t.Fatalf("decode: %v", err)
	}
}

func TestStreamsIDMalformed(t *testing.T) {
	a, b := pathTag("/a"), pathTag("/b")
	enc := func(bs ...byte) string { return base64.RawURLEncoding.EncodeToString(bs) }
	ordered := [][4]byte{a, b}
	if string(b[:]) < string(a[:]) {
		ordered = [][4]byte{b, a}
	}
	part := func(tag [4]byte, id ...byte) []byte {
		return append(append(tag[:], byte(len(id))), id...)
	}
	cat := func(parts ...[]byte) []byte {
		out := []byte{streamsIDHead}
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	valid := enc(cat(part(ordered[0], 1, 2), part(ordered[1], 3))...)
	if err := newStreamsID(ordered).decode(valid); err != nil {
		t.Fatalf("the valid ID %q: %v", valid, err)
	}
	for name, id := range map[string]string{
		"empty":            "",
		"not base64url":    "a+b/",
		"padded":           valid + "=",
		"a route's own ID": newCodec("js/A").position(Position{1}),
		"other version":    enc(0xE2),
		"no part":          enc(streamsIDHead),
		"tag cut":          enc(streamsIDHead, 1, 2),
		"length cut":       enc(cat(ordered[0][:])...),
		"part cut":         enc(cat(part(ordered[0], 1, 2))[:7]...),
		"empty part":       enc(cat(append(ordered[0][:], 0))...),
		"out of order":     enc(cat(part(ordered[1], 3), part(ordered[0], 1))...),
		"twice":            enc(cat(part(ordered[0], 3), part(ordered[0], 1))...),
		"too long":         strings.Repeat("A", MaxStreamsIDLength+1),
	} {
		ids := newStreamsID(ordered)
		if err := ids.decode(id); !errors.Is(err, errBadStreamsID) {
			t.Errorf("%s (%.40q): got %v, want errBadStreamsID", name, id, err)
		}
		if ids.get(a) != "" || ids.get(b) != "" {
			t.Errorf("%s: a part was set", name)
		}
	}
}

// FuzzStreamsID decodes any ID without a panic; an ID accepted encodes
// back to itself when it names only the stream's routes, in order.
func FuzzStreamsID(f *testing.F) {
	a, b := pathTag("/a"), pathTag("/b")
	ids := newStreamsID([][4]byte{a, b})
	ids.set(a, newCodec("js/A").position(Position{42}))
	ids.set(b, newCodec("kafka/B").event(Position{7, 9}, 1))
	seed, _ := ids.encode()
	f.Add(seed)
	f.Add("")
	f.Add("4Q")
	f.Fuzz(func(t *testing.T, id string) {
		got := newStreamsID([][4]byte{a, b})
		if got.decode(id) != nil {
			return
		}
		again, ok := got.encode()
		if !ok {
			t.Fatalf("decoded %q, cannot encode it again", id)
		}
		if again == "" {
			if got.get(a) != "" || got.get(b) != "" {
				t.Fatalf("decoded %q: parts with no encoding", id)
			}
			return // only parts of other routes
		}
		back := newStreamsID([][4]byte{a, b})
		if err := back.decode(again); err != nil {
			t.Fatalf("cannot decode its own encoding %q: %v", again, err)
		}
		if back.get(a) != got.get(a) || back.get(b) != got.get(b) {
			t.Fatalf("round trip of %q changed the parts", id)
		}
	})
}

// FuzzParseStreams parses any query without a panic, and accepts only
// paths, once each, with filter options only, within the bounds.
func FuzzParseStreams(f *testing.F) {
	f.Add("route=/a&route=/b")
	f.Add("route=/a&route=/a")
	f.Add("route=%2Fa%3Ftype%3Dx")
	f.Add("route=/a&x=%zz")
	f.Add("route=%2Forders%3Ftype%3Dcreated%26type%3Dpaid&route=/payments")
	f.Add("route=%2Fa%3Fsubject%3Da.%2A&route=%2Fb%3Fkey%3Dk1%26key%3Dk2")
	f.Add("route=%2Fa%3Ftype%3Dx&route=%2Fa%3Ftype%3Dy")
	f.Add("route=%2Fa%3Fsince%3D0")
	f.Add("route=%2Fa%3F%25zz")
	f.Add("route=%2Fa%3F&route=/b?")
	f.Fuzz(func(t *testing.T, q string) {
		routes, err := ParseStreams(q)
		if err != nil {
			if !errors.Is(err, ErrBadStreams) {
				t.Fatalf("%q: error %v is not ErrBadStreams", q, err)
			}
			return
		}
		seen := map[string]bool{}
		for _, r := range routes {
			if !strings.HasPrefix(r.Path, "/") || strings.Contains(r.Path, "?") || seen[r.Path] {
				t.Fatalf("%q: accepted %q", q, routes)
			}
			seen[r.Path] = true
			if r.Filter != nil && len(r.Filter) == 0 {
				t.Fatalf("%q: route %q with an empty filter, want nil", q, r.Path)
			}
			for k := range r.Filter {
				if k != "subject" && k != "key" && k != "type" {
					t.Fatalf("%q: accepted the option %q", q, k)
				}
			}
		}
		if len(routes) == 0 || len(routes) > MaxStreamsRoutes {
			t.Fatalf("%q: accepted %d routes", q, len(routes))
		}
	})
}

// set is Set by tag.
func (s *streamsID) set(tag [4]byte, id string) bool {
	i := s.index(tag)
	return i >= 0 && s.setAt(i, []byte(id))
}

// encode returns the merged ID of s, as AppendID does.
func (s *streamsID) encode() (string, bool) {
	b, ok := s.AppendID(nil)
	return string(b), ok
}
