package amqp

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
)

var _ bridge.Seeker = (*Source)(nil)

// PositionAt is the offset of the first message stored at or after the
// time's second; nil when there is none; ErrNoHistory but on a stream.
func TestPositionAt(t *testing.T) {
	b := broker(t)
	name := b.stream(nil)
	s := b.source("stream=" + name)
	brokertest.Open(t, s, bridge.Start{}) // connects
	waitConnected(t, s)
	at := func(when time.Time) bridge.Position {
		t.Helper()
		p, err := s.PositionAt(t.Context(), when)
		if err != nil {
			t.Fatalf("PositionAt(%v): %v", when, err)
		}
		return p
	}
	if p := at(time.Now().Add(-time.Hour)); p != nil {
		t.Errorf("in an empty stream: %v, want nil", p)
	}

	// Two batches, stored in different seconds: RabbitMQ's timestamps
	// are seconds.
	b.publish("", name, bodies("m", 0, 3)...)
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
	second := time.Now()
	b.publish("", name, bodies("m", 3, 6)...)
	var offsets []uint64
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	for range 6 {
		offsets = append(offsets, brokertest.Next(t, r).Offset)
	}

	tests := []struct {
		name string
		when time.Time
		want bridge.Position
	}{
		{"before the oldest", second.Add(-time.Hour), bridge.Position{offsets[0]}},
		{"in the second of the second batch", second, bridge.Position{offsets[3]}},
		{"in the future", time.Now().Add(time.Hour), nil},
	}
	for _, tt := range tests {
		if got := at(tt.when); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}

	q := b.source("queue=" + name)
	if _, err := q.PositionAt(t.Context(), second); !errors.Is(err, bridge.ErrNoHistory) {
		t.Errorf("PositionAt of a queue: %v, want ErrNoHistory", err)
	}
}
