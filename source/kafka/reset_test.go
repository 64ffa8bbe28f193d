package kafka

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// createAgain creates topic again, with n partitions, once the broker has
// finished deleting it.
func (b *testBroker) createAgain(topic string, n int) {
	t := b.t
	t.Helper()
	poll.UntilNil(t, 30*time.Second, "topic "+topic+" is created again", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := b.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: topic, NumPartitions: n, ReplicationFactor: 1,
		}}})
		if err == nil {
			err = res.Errors[topic]
		}
		return err
	})
	b.waitPartitions(topic, n)
}

// deleteTopic deletes topic.
func (b *testBroker) deleteTopic(topic string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := b.client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		b.t.Fatalf("delete topic %s: %v", topic, err)
	}
}

// TestTopicReset deletes the topic under a reader: within seconds the
// reader returns ErrReset, no goroutine waits for the topic in kafka-go's
// leader look-up, and Open says the topic is unavailable. Created again,
// the topic is another incarnation.
func TestTopicReset(t *testing.T) {
	brokertest.CheckLeaks(t)
	b := broker(t)
	topic := b.topic(partitions)
	fill(b, topic, 0, 3)
	s := b.source(topic, Config{MetadataInterval: time.Second})
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	readAll(t, r, topic, 3*partitions, uniform(0))
	old := r.(bridge.Incarnated).Incarnation()
	if old == 0 {
		t.Fatal("Incarnation = 0: the broker gave no topic ID")
	}

	b.deleteTopic(topic)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if m, err := r.Next(ctx); !errors.Is(err, bridge.ErrReset) {
		t.Fatalf("Next after the topic was deleted: %+v, %v; want ErrReset", m, err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("ErrReset after %v, want within seconds (checks every second)", d)
	}
	// The partitions' goroutines wait in kafka-go's look-up of the
	// deleted topic's leaders: Close ends them. kafka-go's look-up
	// returns when its context ends and leaves a goroutine of its own to
	// notice it and end, a moment after: Close does not wait for that one,
	// so wait (briefly) for it, rather than count right after Close.
	start = time.Now()
	r.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	if !poll.Wait(5*time.Second, func() bool { return goroutinesIn("LookupPartition") == 0 }) {
		t.Errorf("%d goroutines in kafka-go's LookupPartition 5s after Close", goroutinesIn("LookupPartition"))
	}
	if _, err := s.Open(ctx, bridge.Start{Earliest: true}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Fatalf("Open while the topic is deleted: %v, want ErrUnavailable", err)
	}

	b.createAgain(topic, partitions)
	fill(b, topic, 0, 2)
	var r2 bridge.Reader
	// As the bridge does: retry, the source's metadata may lag.
	poll.UntilNil(t, 30*time.Second, "Open succeeds after the topic was created again", func() (err error) {
		r2, err = s.Open(ctx, bridge.Start{Earliest: true})
		return err
	})
	defer r2.Close()
	if inc := r2.(bridge.Incarnated).Incarnation(); inc == old || inc == 0 {
		t.Errorf("Incarnation of the topic created again = %d, the old one's %d", inc, old)
	}
	readAll(t, r2, topic, 2*partitions, uniform(0))
}

// goroutinesIn returns how many goroutines have fn on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
