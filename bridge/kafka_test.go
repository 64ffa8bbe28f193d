package bridge_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	kafkasource "github.com/esbridge/esbridge/source/kafka"
)

// These tests run the bridge against a real Kafka broker (make test starts
// one with scripts/kafka.sh; KAFKA_BROKERS names another). They prove the
// hand-off between replay and the live log for a topic whose partitions
// are merged in an order that differs between readers.

// kafkaTopic creates a topic of n partitions for the test.
func kafkaTopic(t *testing.T, brokers []string, n int) string {
	t.Helper()
	// A transport of its own: kafka-go's default one keeps connections
	// from earlier tests, which a restart of the broker by another
	// package's test leaves dead (CreateTopics: unexpected EOF).
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	name := fmt.Sprintf("esbridge-bridge-%d", time.Now().UnixNano())
	res, err := client.CreateTopics(t.Context(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: n, ReplicationFactor: 1,
	}}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
	t.Cleanup(func() {
		client.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{name}})
	})
	return name
}

// produce writes messages "k<key>-<n>" for n in from..to of every key
// 0..keys-1, keyed, so that each key stays in one partition.
func produce(t *testing.T, brokers []string, topic string, keys, from, to int) {
	t.Helper()
	tr := &kafka.Transport{} // of its own, as kafkaTopic's
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: tr}
	defer w.Close()
	var msgs []kafka.Message
	for n := from; n <= to; n++ {
		for k := range keys {
			msgs = append(msgs, kafka.Message{Key: []byte("k" + strconv.Itoa(k)), Value: fmt.Appendf(nil, "k%d-%d", k, n)})
		}
	}
	poll.UntilNil(t, 30*time.Second, "the messages are produced", func() error {
		return w.WriteMessages(t.Context(), msgs...)
	})
}

// kafkaBridge serves topic at /t from a bridge of its own, as another
// instance would, and returns the route's URL once it is ready.
func kafkaBridge(t *testing.T, brokers []string, topic string, cfg bridge.Config) string {
	t.Helper()
	src, err := kafkasource.New(kafkasource.Config{Brokers: brokers, Topic: topic, MetadataInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return runBridge(t, bridge.Route{Path: "/t", Source: src}, cfg)
}

// keyed checks that events arrive in each key's order, each once, and
// remembers them.
type keyed struct {
	t    *testing.T
	next map[string]int // key -> next n expected
	ids  []string       // the ID of each event, in arrival order
	data []string
}

func newKeyed(t *testing.T) *keyed {
	return &keyed{t: t, next: map[string]int{}}
}

// read takes n events from c, checking per-key order from the numbers
// given by start (a key first seen must be at start).
func (k *keyed) read(c *sseClient, n, start int) {
	k.t.Helper()
	for range n {
		ev := c.next()
		key, num, ok := strings.Cut(ev.data, "-")
		i, err := strconv.Atoi(num)
		if !ok || err != nil || ev.typ != "" {
			k.t.Fatalf("event %+v", ev)
		}
		want, seen := k.next[key]
		if !seen {
			want = start
		}
		if i != want {
			k.t.Fatalf("%s: got %d, want %d (a gap or a duplicate)", key, i, want)
		}
		k.next[key] = i + 1
		k.ids = append(k.ids, ev.id)
		k.data = append(k.data, ev.data)
	}
}

func TestKafkaResumeAcrossPartitions(t *testing.T) {
	brokers := brokertest.Kafka(t)
	const keys = 12
	topic := kafkaTopic(t, brokers, 6)
	// Logs of 16 events: resumes come from the broker.
	one := kafkaBridge(t, brokers, topic, bridge.Config{Backlog: 16})
	two := kafkaBridge(t, brokers, topic, bridge.Config{Backlog: 16})

	a := open(t, one, "")
	produce(t, brokers, topic, keys, 1, 25) // 300 messages over 6 partitions
	all := newKeyed(t)
	all.read(a, 300, 1)

	// Resume after event 50, from the broker (the log holds the last 16),
	// on this instance and on the other: the rest, exactly.
	for name, url := range map[string]string{"same instance": one, "other instance": two} {
		t.Run(name, func(t *testing.T) {
			c := open(t, url, all.ids[49])
			got := make(map[string]bool)
			for range 250 {
				ev := c.next()
				if got[ev.data] {
					t.Fatalf("%s twice", ev.data)
				}
				got[ev.data] = true
			}
			for _, d := range all.data[50:] {
				if !got[d] {
					t.Fatalf("%s missing after resuming from event 50", d)
				}
			}
		})
	}

	// The live stream goes on for a client that resumed from the newest ID.
	b := open(t, two, all.ids[299])
	produce(t, brokers, topic, keys, 26, 30)
	more := newKeyed(t)
	more.read(b, 60, 26)
	all.read(a, 60, 0)
}

func TestKafkaSlowClientIsReplayed(t *testing.T) {
	brokers := brokertest.Kafka(t)
	topic := kafkaTopic(t, brokers, 6)
	url := kafkaBridge(t, brokers, topic, bridge.Config{Backlog: 8})
	slow := open(t, url, "")
	produce(t, brokers, topic, 12, 1, 100) // 1,200 messages through a log of 8
	k := newKeyed(t)
	k.read(slow, 1200, 1)
	produce(t, brokers, topic, 12, 101, 101)
	k.read(slow, 12, 0)
}
