package kafka

import (
	"encoding/binary"
	"slices"
	"testing"
)

// metadataResponse encodes a Metadata response of version 12 (header v1)
// with two brokers, 0 on port 9092 and 1 on 9093, and the given topics,
// each with n partitions of two replicas: partition p led by broker p%3
// (none where that is 2, which does not exist).
func metadataResponse(correlationID int32, topics map[string]int, id [16]byte, code int16) []byte {
	var b []byte
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))+1); b = append(b, s...) }
	i32 := func(v int32) { b = binary.BigEndian.AppendUint32(b, uint32(v)) }
	b = binary.BigEndian.AppendUint32(b, uint32(correlationID))
	b = append(b, 1, 7, 2, 'x', 'y') // header: one tagged field, tag 7 of 2 bytes
	i32(0)                           // throttle
	b = binary.AppendUvarint(b, 3)   // two brokers
	for n := range 2 {
		i32(int32(n))
		str("127.0.0.1")
		i32(int32(9092 + n))
		b = append(b, 0) // rack: null
		b = append(b, 0) // tags
	}
	str("cluster")
	i32(1)
	b = binary.AppendUvarint(b, uint64(len(topics))+1)
	for name, n := range topics {
		b = binary.BigEndian.AppendUint16(b, uint16(code))
		str(name)
		b = append(b, id[:]...)
		b = append(b, 0) // is_internal
		b = binary.AppendUvarint(b, uint64(n)+1)
		for p := range n {
			b = append(b, 0, 0)
			i32(int32(p))
			i32(int32(p % 3))
			i32(5)
			for range 3 {
				b = binary.AppendUvarint(b, 3)
				i32(0)
				i32(1)
			}
			b = append(b, 0)
		}
		i32(0)
		b = append(b, 0)
	}
	return append(b, 0)
}

func TestParseTopicIDResponse(t *testing.T) {
	id := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	b := metadataResponse(7, map[string]int{"orders": 6}, id, 0)
	r, err := parseTopicIDResponse(b, 7, "orders")
	if err != nil || r.meta.id != id || r.meta.partitions != 6 || r.errorCode != 0 {
		t.Fatalf("parse = %+v, %v", r, err)
	}
	for p := range 6 {
		b, ok := r.meta.leader(p)
		if want := 9092 + p%3; p%3 == 2 && ok || p%3 != 2 && (!ok || b.Port != want || b.Host != "127.0.0.1" || b.ID != p%3) {
			t.Errorf("partition %d: leader %+v, %v; want port %d, or none for p%%3 == 2", p, b, ok, want)
		}
	}
	if want := []string{"127.0.0.1:9092", "127.0.0.1:9093"}; !slices.Equal(r.meta.brokers, want) {
		t.Errorf("brokers %v, want %v", r.meta.brokers, want)
	}
	if r.meta.incarnation() == 0 {
		t.Error("incarnation 0 for an ID")
	}
	if (topicMeta{}).incarnation() != 0 {
		t.Error("incarnation of no ID is not 0")
	}
	if r, err := parseTopicIDResponse(metadataResponse(7, map[string]int{"orders": 0}, [16]byte{}, 3), 7, "orders"); err != nil || r.errorCode != 3 {
		t.Errorf("unknown topic: %+v, %v", r, err)
	}
	if _, err := parseTopicIDResponse(b, 1, "orders"); err == nil {
		t.Error("another correlation ID: no error")
	}
	if _, err := parseTopicIDResponse(metadataResponse(7, map[string]int{"payments": 1}, id, 0), 7, "orders"); err == nil {
		t.Error("a response without the topic: no error")
	}
	for n := range len(b) {
		if _, err := parseTopicIDResponse(b[:n], 7, "orders"); err == nil {
			t.Errorf("cut to %d of %d bytes: no error", n, len(b))
		}
	}
}

func TestAPIVersions(t *testing.T) {
	req := appendAPIVersionsRequest(nil, 3, "esbridge")
	if got := binary.BigEndian.Uint32(req); int(got) != len(req)-4 {
		t.Errorf("frame size %d, want %d", got, len(req)-4)
	}
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 3)
	b = append(b, 0, 0)                     // no error
	b = binary.BigEndian.AppendUint32(b, 2) // two keys
	b = append(b, 0, 0, 0, 0, 0, 9)         // Produce 0..9
	b = append(b, 0, 3, 0, 0, 0, 13)        // Metadata 0..13
	if v, err := parseAPIVersionsResponse(b, 3, 3); err != nil || v != 13 {
		t.Errorf("Metadata version %d, %v; want 13", v, err)
	}
	if _, err := parseAPIVersionsResponse(b[:len(b)-1], 3, 3); err == nil {
		t.Error("a cut response: no error")
	}
}

func TestTopicIDRequest(t *testing.T) {
	req := appendTopicIDRequest(nil, 5, "esbridge", "orders")
	if got := binary.BigEndian.Uint32(req); int(got) != len(req)-4 {
		t.Errorf("frame size %d, want %d", got, len(req)-4)
	}
	if key, v := binary.BigEndian.Uint16(req[4:]), binary.BigEndian.Uint16(req[6:]); key != 3 || v != topicIDVersion {
		t.Errorf("api key %d version %d, want Metadata (3) version %d", key, v, topicIDVersion)
	}
}

// FuzzParseTopicIDResponse: any bytes give a response or an error, never
// a panic, and never more partitions than bytes.
func FuzzParseTopicIDResponse(f *testing.F) {
	f.Add(metadataResponse(1, map[string]int{"orders": 3}, [16]byte{9}, 0))
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseTopicIDResponse(b, 1, "orders")
		if err == nil && r.meta.partitions > len(b) {
			t.Errorf("%d partitions from %d bytes", r.meta.partitions, len(b))
		}
		parseAPIVersionsResponse(b, 1, 3)
	})
}
