package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// TestBrokerRestart restarts the broker of scripts/kafka.sh, keeping its
// data, while a reader reads (see brokertest.LockKafka). The reader must
// go on with no gap and no duplicate, by itself or, after Next returns an
// error, by being reopened at its Position as the bridge does.
func TestBrokerRestart(t *testing.T) {
	restart := brokertest.LockKafka(t, "../../scripts/kafka.sh")
	brokertest.CheckLeaks(t)
	b := broker(t)
	topic := b.topic(3)
	s := b.source(topic, Config{MetadataInterval: 500 * time.Millisecond})
	const n = 100
	batch := func(p, from int) {
		var rs []kafka.Record
		for i := from; i < from+n; i++ {
			rs = append(rs, kafka.Record{Value: kafka.NewBytes(fmt.Appendf(nil, "%d", i))})
		}
		b.produce(topic, p, rs...)
	}
	for p := range 3 {
		batch(p, 0)
	}
	r, err := s.Open(context.Background(), bridge.Start{Earliest: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { r.Close() }()
	want := bridge.Position{0, 0, 0}
	reopens := 0
	read := func(count int) {
		for count > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			m, err := r.Next(ctx)
			cancel()
			if err != nil {
				t.Logf("Next: %v; reopening at %v", err, r.Position())
				pos := r.Position()
				r.Close()
				reopens++
				poll.UntilNil(t, 2*time.Minute, "the reader reopens", func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					r, err = s.Open(ctx, bridge.Start{Position: pos})
					if err != nil {
						t.Logf("Open: %v", err)
					}
					return err
				})
				continue
			}
			if m.Offset != want[m.Partition] || string(m.Data) != fmt.Sprint(m.Offset) {
				t.Fatalf("partition %d: offset %d %q, want %d", m.Partition, m.Offset, m.Data, want[m.Partition])
			}
			want[m.Partition]++
			count--
		}
	}
	read(150)
	start := time.Now()
	restart()
	t.Logf("restarted in %v", time.Since(start))
	for p := range 3 {
		batch(p, n)
	}
	read(450)
	t.Logf("reopened %d times; Connected %v", reopens, s.Connected())
	brokertest.ExpectNothing(t, r)
}
