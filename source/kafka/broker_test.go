package kafka

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// The tests run against a real broker: KAFKA_BROKERS (comma-separated
// HOST:PORT), or 127.0.0.1:9092 as started by scripts/kafka.sh. Without
// one, they are skipped, or fail when CI is set.

// testBroker is a real broker's admin client, and the topics a test made.
type testBroker struct {
	t        *testing.T
	brokers  []string
	client   *kafka.Client
	replicas int // of the topics it makes
}

func broker(t *testing.T) *testBroker {
	t.Helper()
	return newTestBroker(t, brokertest.Kafka(t), 1)
}

func newTestBroker(t *testing.T, brokers []string, replicas int) *testBroker {
	tr := &kafka.Transport{MetadataTTL: 100 * time.Millisecond}
	t.Cleanup(tr.CloseIdleConnections)
	return &testBroker{t: t, brokers: brokers, replicas: replicas,
		client: &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 10 * time.Second}}
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// topic creates a topic of n partitions with the given configuration,
// unique to the test, and deletes it at cleanup.
func (b *testBroker) topic(n int, config ...kafka.ConfigEntry) string {
	t := b.t
	t.Helper()
	name := fmt.Sprintf("esbridge-%s-%d", unsafeName.ReplaceAllString(t.Name(), "-"), time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := b.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: n, ReplicationFactor: b.replicas, ConfigEntries: config,
	}}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := b.client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
		if err == nil {
			err = res.Errors[name]
		}
		if err != nil {
			t.Errorf("delete topic %s: %v", name, err)
		}
	})
	b.waitPartitions(name, n)
	return name
}

// waitPartitions waits until the n partitions of topic have leaders that
// answer.
func (b *testBroker) waitPartitions(topic string, n int) {
	t := b.t
	t.Helper()
	reqs := make([]kafka.OffsetRequest, n)
	for i := range reqs {
		reqs[i] = kafka.LastOffsetOf(i)
	}
	poll.UntilNil(t, 30*time.Second, fmt.Sprintf("the %d partitions of topic %s are ready", n, topic), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := b.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err != nil {
			return err
		}
		ps := res.Topics[topic]
		if len(ps) != n {
			err = fmt.Errorf("%d partitions of %d", len(ps), n)
		}
		for _, p := range ps {
			if p.Error != nil {
				err = p.Error
			}
		}
		return err
	})
}

// produce appends records to a partition and returns the offset of the
// first.
func (b *testBroker) produce(topic string, partition int, records ...kafka.Record) int64 {
	t := b.t
	t.Helper()
	// Keys and values are readers, consumed by a try: keep their bytes.
	type kv struct{ key, value []byte }
	data := make([]kv, len(records))
	for i, r := range records {
		data[i] = kv{readBytes(t, r.Key), readBytes(t, r.Value)}
	}
	// The client's metadata may not know a new partition yet, or the
	// broker be restarting: retry.
	var offset int64
	poll.UntilNil(t, 30*time.Second, fmt.Sprintf("a produce to %s/%d succeeds", topic, partition), func() error {
		for i := range records {
			records[i].Key, records[i].Value = nil, nil
			if data[i].key != nil {
				records[i].Key = kafka.NewBytes(data[i].key)
			}
			if data[i].value != nil {
				records[i].Value = kafka.NewBytes(data[i].value)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := b.client.Produce(ctx, &kafka.ProduceRequest{
			Topic: topic, Partition: partition, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(records...),
		})
		cancel()
		if err == nil {
			err = res.Error
		}
		if err == nil {
			offset = res.BaseOffset
		}
		return err
	})
	return offset
}

func readBytes(t *testing.T, b kafka.Bytes) []byte {
	if b == nil {
		return nil
	}
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// firstOffset returns the first offset of a partition.
func (b *testBroker) firstOffset(topic string, partition int) int64 {
	t := b.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := b.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(partition)}}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Topics[topic][0].FirstOffset
}

// source returns a Source of topic, closed at cleanup.
func (b *testBroker) source(topic string, cfg Config) *Source {
	t := b.t
	t.Helper()
	cfg.Brokers = b.brokers
	cfg.Topic = topic
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
