package kafka

import (
	"slices"
	"testing"

	"github.com/esbridge/esbridge/bridge"
)

var _ bridge.Headed = (*Source)(nil)

// Head is every partition's high-water mark.
func TestHead(t *testing.T) {
	b := broker(t)
	topic := b.topic(partitions)
	s := b.source(topic, Config{})
	head := func() bridge.Position {
		t.Helper()
		p, err := s.Head(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := head(); !slices.Equal(p, uniform(0)) {
		t.Errorf("head of an empty topic %v, want %v", p, uniform(0))
	}
	fill(b, topic, 0, 10)
	b.produce(topic, 1, record(1, 10), record(1, 11))
	want := uniform(10)
	want[1] = 12
	if p := head(); !slices.Equal(p, want) {
		t.Errorf("head %v, want %v", p, want)
	}
}
