package kafka

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
)

var _ bridge.Seeker = (*Source)(nil)

// PositionAt is, in each partition, the first offset at or after the
// time, or the high-water mark.
func TestPositionAt(t *testing.T) {
	b := broker(t)
	topic := b.topic(3)
	s := b.source(topic, Config{})
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	at := func(p int, from time.Duration) []kafka.Record {
		rs := make([]kafka.Record, 5)
		for i := range rs {
			rs[i] = kafka.Record{Value: kafka.NewBytes(fmt.Appendf(nil, "p%d-m%d", p, i)), Time: base.Add(from + time.Duration(i)*time.Second)}
		}
		return rs
	}
	b.produce(topic, 0, at(0, 0)...)              // base .. base+4s
	b.produce(topic, 1, at(1, 10*time.Second)...) // base+10s .. base+14s
	// Partition 2 is empty.
	tests := []struct {
		name string
		t    time.Time
		want bridge.Position
	}{
		{"before the oldest", base.Add(-time.Hour), bridge.Position{0, 0, 0}},
		{"at a message", base.Add(2 * time.Second), bridge.Position{2, 0, 0}},
		{"between messages", base.Add(2500 * time.Millisecond), bridge.Position{3, 0, 0}},
		{"after a partition's last", base.Add(12 * time.Second), bridge.Position{5, 2, 0}},
		{"at the last", base.Add(14 * time.Second), bridge.Position{5, 4, 0}},
		{"in the future", time.Now().Add(time.Hour), bridge.Position{5, 5, 0}},
	}
	for _, tt := range tests {
		got, err := s.PositionAt(t.Context(), tt.t)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: PositionAt = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
}
