package nats

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
)

// OpenSnapshot reads the last message of each subject before a position,
// in sequence order, then io.EOF; on an empty stream, io.EOF at once.
func TestOpenSnapshot(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	s := ts.source(Config{Stream: "ORDERS"})
	brokertest.Open(t, s, bridge.Start{}) // connects the source, as the live reader does
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	next := func(r bridge.Reader) (uint64, error) {
		t.Helper()
		m, err := r.Next(ctx)
		return m.Offset, err
	}
	empty, err := s.OpenSnapshot(ctx, bridge.Position{1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next(empty); !errors.Is(err, io.EOF) {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
	empty.Close()

	publish(t, js, "orders.a", 1, 3) // 1-3
	publish(t, js, "orders.b", 4, 2) // 4-5
	publish(t, js, "orders.a", 6, 1) // 6
	publish(t, js, "orders.c", 7, 2) // 7-8
	r, err := s.OpenSnapshot(ctx, bridge.Position{9})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []uint64
	for {
		seq, err := next(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, seq)
	}
	if want := []uint64{5, 6, 8}; !slices.Equal(got, want) {
		t.Fatalf("snapshot read %v, want %v: the last of b, a and c", got, want)
	}
	if _, err := s.OpenSnapshot(ctx, bridge.Position{1, 2}); !errors.Is(err, bridge.ErrBadPosition) {
		t.Fatalf("a position of 2 partitions: %v, want ErrBadPosition", err)
	}
}
