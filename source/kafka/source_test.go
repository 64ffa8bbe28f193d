package kafka

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

const partitions = 6

// record returns the i-th record of a partition of the keyed tests.
func record(p, i int) kafka.Record {
	return kafka.Record{
		Key:   kafka.NewBytes(fmt.Appendf(nil, "key-%d", p)),
		Value: kafka.NewBytes(fmt.Appendf(nil, "p%d-m%d", p, i)),
		Headers: []kafka.Header{
			{Key: "b", Value: []byte("first")},
			{Key: "a", Value: fmt.Appendf(nil, "%d", i)},
			{Key: "b", Value: []byte("third")},
		},
	}
}

// fill appends messages from..to-1 to every partition.
func fill(b *testBroker, topic string, from, to int) {
	b.t.Helper()
	for p := range partitions {
		var rs []kafka.Record
		for i := from; i < to; i++ {
			rs = append(rs, record(p, i))
		}
		if off := b.produce(topic, p, rs...); off != int64(from) {
			b.t.Fatalf("partition %d: produced at offset %d, want %d", p, off, from)
		}
	}
}

// readAll reads n messages and checks that each partition's come in order,
// from want[p] on, with the fields record gave them, and that Position
// follows.
func readAll(t *testing.T, r bridge.Reader, topic string, n int, want bridge.Position) {
	t.Helper()
	want = slices.Clone(want)
	for range n {
		m := brokertest.Next(t, r)
		p := m.Partition
		if p < 0 || p >= len(want) {
			t.Fatalf("message of partition %d", p)
		}
		if m.Offset != want[p] {
			t.Fatalf("partition %d: offset %d, want %d", p, m.Offset, want[p])
		}
		i := int(m.Offset)
		if m.Topic != topic || string(m.Key) != fmt.Sprintf("key-%d", p) || string(m.Data) != fmt.Sprintf("p%d-m%d", p, i) {
			t.Fatalf("message %+v", m)
		}
		wantHeaders := []bridge.Header{{Key: "b", Value: "first"}, {Key: "a", Value: fmt.Sprint(i)}, {Key: "b", Value: "third"}}
		if !reflect.DeepEqual(m.Headers, wantHeaders) {
			t.Fatalf("headers %q, want %q", m.Headers, wantHeaders)
		}
		if d := time.Since(m.Time); d < 0 || d > time.Minute {
			t.Fatalf("time %v", m.Time)
		}
		want[p]++
		if got := r.Position(); !slices.Equal(got, want) {
			t.Fatalf("Position %v, want %v", got, want)
		}
	}
}

func uniform(n uint64) bridge.Position {
	p := make(bridge.Position, partitions)
	for i := range p {
		p[i] = n
	}
	return p
}

func TestPartitions(t *testing.T) {
	brokertest.CheckLeaks(t)
	b := broker(t)
	topic := b.topic(partitions)
	s := b.source(topic, Config{})
	fill(b, topic, 0, 10)

	if got := s.Info(); got != (bridge.Info{Stream: "kafka/" + topic, History: true, OffsetName: "offset", Keyed: true}) {
		t.Errorf("Info = %+v", got)
	}

	t.Run("latest", func(t *testing.T) {
		r := brokertest.Open(t, s, bridge.Start{})
		if got := r.Position(); !slices.Equal(got, uniform(10)) {
			t.Fatalf("Position %v, want the high-water marks", got)
		}
		if !s.Connected() {
			t.Error("not connected")
		}
		brokertest.ExpectNothing(t, r)
		fill(b, topic, 10, 15)
		readAll(t, r, topic, 5*partitions, uniform(10))
		brokertest.ExpectNothing(t, r)
		start := time.Now()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Close took %v", d)
		} else {
			t.Logf("Close took %v", d)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("earliest", func(t *testing.T) {
		r := brokertest.Open(t, s, bridge.Start{Earliest: true})
		if got := r.Position(); !slices.Equal(got, uniform(0)) {
			t.Fatalf("Position %v, want zeros", got)
		}
		readAll(t, r, topic, 15*partitions, uniform(0))
		brokertest.ExpectNothing(t, r)
	})

	t.Run("position", func(t *testing.T) {
		start := bridge.Position{0, 3, 7, 14, 15, 15}
		r := brokertest.Open(t, s, bridge.Start{Position: start})
		n := 0
		for _, o := range start {
			n += 15 - int(o)
		}
		readAll(t, r, topic, n, start)
		brokertest.ExpectNothing(t, r)
	})

	t.Run("short position", func(t *testing.T) {
		// Partitions beyond the position are read from their first offset.
		start := bridge.Position{14, 15}
		r := brokertest.Open(t, s, bridge.Start{Position: start})
		if got, want := r.Position(), (bridge.Position{14, 15, 0, 0, 0, 0}); !slices.Equal(got, want) {
			t.Fatalf("Position %v, want %v", got, want)
		}
		readAll(t, r, topic, 1+4*15, r.Position())
	})

	t.Run("beyond the end", func(t *testing.T) {
		// An offset past the high-water mark is refused; one at it is
		// waited for.
		start := uniform(15)
		start[2] = 16
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := s.Open(ctx, bridge.Start{Position: start}); !errors.Is(err, bridge.ErrAhead) {
			t.Fatalf("Open at %v, the high-water marks at 15: %v, want ErrAhead", start, err)
		}
		start[2] = 15
		r := brokertest.Open(t, s, bridge.Start{Position: start})
		brokertest.ExpectNothing(t, r)
		fill(b, topic, 15, 17)
		want := slices.Clone(start)
		for range 2 * partitions {
			m := brokertest.Next(t, r)
			if m.Offset != want[m.Partition] {
				t.Fatalf("partition %d: offset %d, want %d", m.Partition, m.Offset, want[m.Partition])
			}
			want[m.Partition]++
		}
		if got := r.Position(); !slices.Equal(got, uniform(17)) {
			t.Fatalf("Position %v, want %v", got, uniform(17))
		}
	})

	t.Run("reopen at position", func(t *testing.T) {
		// Reading on from Position after any message: no gap, no duplicate.
		r := brokertest.Open(t, s, bridge.Start{Earliest: true})
		seen := map[[2]uint64]bool{}
		for k := range 3 {
			for range 17 {
				m := brokertest.Next(t, r)
				key := [2]uint64{uint64(m.Partition), m.Offset}
				if seen[key] {
					t.Fatalf("message %v twice", key)
				}
				seen[key] = true
			}
			pos := r.Position()
			r.Close()
			r = brokertest.Open(t, s, bridge.Start{Position: pos})
			if got := r.Position(); !slices.Equal(got, pos) {
				t.Fatalf("reopen %d: Position %v, want %v", k, got, pos)
			}
		}
		for len(seen) < 17*partitions {
			m := brokertest.Next(t, r)
			key := [2]uint64{uint64(m.Partition), m.Offset}
			if seen[key] {
				t.Fatalf("message %v twice", key)
			}
			seen[key] = true
		}
		brokertest.ExpectNothing(t, r)
	})

	t.Run("next after ctx error", func(t *testing.T) {
		r := brokertest.Open(t, s, bridge.Start{})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := r.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next = %v, want DeadlineExceeded", err)
		}
		b.produce(topic, 4, record(4, 17))
		canceled, cancel2 := context.WithCancel(context.Background())
		cancel2()
		if _, err := r.Next(canceled); !errors.Is(err, context.Canceled) {
			t.Fatalf("Next = %v, want Canceled", err)
		}
		if m := brokertest.Next(t, r); m.Partition != 4 || m.Offset != 17 {
			t.Fatalf("got %d/%d, want 4/17", m.Partition, m.Offset)
		}
	})

	t.Run("too long position", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := s.Open(ctx, bridge.Start{Position: make(bridge.Position, partitions+1)})
		var exp *bridge.ExpiredError
		if !errors.Is(err, bridge.ErrExpired) || !errors.As(err, &exp) {
			t.Fatalf("Open = %v, want ErrExpired", err)
		}
		if len(exp.Resume) != partitions {
			t.Errorf("Resume = %v, want a position of %d partitions", exp.Resume, partitions)
		}
	})

	t.Run("closed", func(t *testing.T) {
		r := brokertest.Open(t, s, bridge.Start{})
		r.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := r.Next(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next after Close = %v", err)
		}
	})
}

func TestPartitionAdded(t *testing.T) {
	brokertest.CheckLeaks(t)
	b := broker(t)
	topic := b.topic(2)
	s := b.source(topic, Config{MetadataInterval: 100 * time.Millisecond})
	r := brokertest.Open(t, s, bridge.Start{})
	b.produce(topic, 1, kafka.Record{Value: kafka.NewBytes([]byte("old"))})
	if m := brokertest.Next(t, r); m.Partition != 1 || string(m.Data) != "old" {
		t.Fatalf("got %+v", m)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := b.client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 4}}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatal(err)
	}
	b.waitPartitions(topic, 4)
	b.produce(topic, 3, kafka.Record{Value: kafka.NewBytes([]byte("new"))})
	b.produce(topic, 3, kafka.Record{Value: kafka.NewBytes([]byte("newer"))})
	for _, want := range []string{"new", "newer"} {
		if m := brokertest.Next(t, r); m.Partition != 3 || string(m.Data) != want {
			t.Fatalf("got %d %q, want 3 %q", m.Partition, m.Data, want)
		}
	}
	if got, want := r.Position(), (bridge.Position{0, 1, 0, 2}); !slices.Equal(got, want) {
		t.Fatalf("Position %v, want %v", got, want)
	}
}

func TestRetention(t *testing.T) {
	brokertest.CheckLeaks(t)
	b := broker(t)
	// Segments roll after 100 ms (at the next append) and are deleted once
	// their newest message is 100 ms old, by the broker's retention check
	// (each second with scripts/kafka.sh).
	topic := b.topic(2,
		kafka.ConfigEntry{ConfigName: "retention.ms", ConfigValue: "100"},
		kafka.ConfigEntry{ConfigName: "segment.ms", ConfigValue: "100"},
		kafka.ConfigEntry{ConfigName: "file.delete.delay.ms", ConfigValue: "0"},
	)
	s := b.source(topic, Config{})
	for i := range 5 {
		b.produce(topic, 1, kafka.Record{Value: kafka.NewBytes(fmt.Appendf(nil, "m%d", i))})
	}
	// Produce until retention deletes the first segment.
	poll.Until(t, 90*time.Second, "retention deletes a segment", func() bool {
		if b.firstOffset(topic, 1) != 0 {
			return true
		}
		b.produce(topic, 1, kafka.Record{Value: kafka.NewBytes([]byte("roll"))})
		return false
	})
	first := uint64(b.firstOffset(topic, 1))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := s.Open(ctx, bridge.Start{Position: bridge.Position{0, 2}})
	var exp *bridge.ExpiredError
	if !errors.Is(err, bridge.ErrExpired) || !errors.As(err, &exp) {
		t.Fatalf("Open = %v, want ErrExpired", err)
	}
	t.Log(err)
	if !strings.Contains(exp.Lost, "partition 1: offsets 2 to ") || strings.Contains(exp.Lost, "partition 0") {
		t.Errorf("Lost = %q, want partition 1 from offset 2 only", exp.Lost)
	}
	if pos := exp.Resume; len(pos) != 2 || pos[0] != 0 || pos[1] < first {
		t.Fatalf("Resume = %v, want [0 >=%d]: partition 0 loses nothing", pos, first)
	}

	// The caller goes on from the earliest messages.
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	if got := r.Position(); got[0] != 0 || got[1] < first {
		t.Fatalf("Position %v, want [0 >=%d]", got, first)
	}
}

func TestUnavailable(t *testing.T) {
	t.Run("missing topic", func(t *testing.T) {
		brokertest.CheckLeaks(t)
		b := broker(t)
		s := b.source(fmt.Sprintf("esbridge-missing-%d", time.Now().UnixNano()), Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := s.Open(ctx, bridge.Start{})
		if !errors.Is(err, bridge.ErrUnavailable) {
			t.Fatalf("Open = %v, want ErrUnavailable", err)
		}
		t.Log(err)
		if !errors.Is(err, kafka.UnknownTopicOrPartition) {
			t.Errorf("Open = %v, want UnknownTopicOrPartition", err)
		}
		if !s.Connected() {
			t.Error("not connected to a broker that answers")
		}
	})

	t.Run("no broker", func(t *testing.T) {
		brokertest.CheckLeaks(t)
		s, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		_, err = s.Open(ctx, bridge.Start{})
		if !errors.Is(err, bridge.ErrUnavailable) {
			t.Fatalf("Open = %v, want ErrUnavailable", err)
		}
		t.Logf("%v after %v", err, time.Since(start))
		if s.Connected() {
			t.Error("connected")
		}
	})

	t.Run("ctx", func(t *testing.T) {
		s, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, err := s.Open(ctx, bridge.Start{}); err == nil {
			t.Fatal("Open succeeded")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Open took %v after ctx ended", d)
		}
	})
}
