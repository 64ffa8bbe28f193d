package e2e

// The kinds of route that the scenarios of streams_test.go run against:
// one row each, with a stream of the test's own on its broker.

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// A routeKind is a kind of broker stream with history, which esbridge
// serves with no gap and no duplicate.
type routeKind struct {
	name string
	// partitions is how many partitions the stream has. Messages keep
	// their order within a partition; a stream without partitions has one.
	partitions int
	// newStream creates a stream of the test's own, deleted at cleanup
	// (or skips the test if the broker is missing; see brokertest). It
	// returns the stream's route URL, in which clients without an ID start
	// with the earliest message (start=earliest), and a function that
	// publishes payloads, in order, to a partition (0 <= partition <
	// partitions) and returns once the broker has them.
	newStream func(t *testing.T) (url string, publish func(partition int, payloads ...string) error)
}

// routeKinds are the rows of the scenarios.
var routeKinds = []routeKind{
	{name: "jetstream", partitions: 1, newStream: newJetStream},
	{name: "kafka", partitions: 6, newStream: newKafkaTopic},
	{name: "rabbitmq-stream", partitions: 1, newStream: newRabbitMQStream},
}

// newJetStream starts a nats-server and creates a JetStream stream on it.
func newJetStream(t *testing.T) (string, func(int, ...string) error) {
	ns, js := runJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "E2E", Subjects: []string{"e2e.>"}}); err != nil {
		t.Fatal(err)
	}
	publish := func(_ int, payloads ...string) error {
		for _, p := range payloads {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			_, err := js.Publish(ctx, "e2e.messages", []byte(p))
			cancel()
			if err != nil {
				return fmt.Errorf("publish %q: %w", p, err)
			}
		}
		return nil
	}
	return "jetstream://" + ns.Addr() + "/E2E?start=earliest", publish
}

var topicNameRE = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// newKafkaTopic creates a topic of 6 partitions on the Kafka broker of the
// tests. Messages to partition p have the key "k<p>".
func newKafkaTopic(t *testing.T) (string, func(int, ...string) error) {
	brokers := brokertest.Kafka(t)
	tr := &kafka.Transport{}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	name := fmt.Sprintf("esbridge-e2e-%s-%d", topicNameRE.ReplaceAllString(t.Name(), "_"), time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: 6, ReplicationFactor: 1,
	}}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
		tr.CloseIdleConnections()
	})
	publish := func(partition int, payloads ...string) error {
		// Retried while the broker is briefly unavailable; a retry after
		// a write the broker did take would duplicate it.
		var err error
		if poll.Wait(waitFor, func() bool {
			records := make([]kafka.Record, len(payloads))
			for i, p := range payloads {
				records[i] = kafka.Record{Key: kafka.NewBytes([]byte("k" + strconv.Itoa(partition))), Value: kafka.NewBytes([]byte(p))}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var res *kafka.ProduceResponse
			res, err = client.Produce(ctx, &kafka.ProduceRequest{
				Topic: name, Partition: partition, RequiredAcks: kafka.RequireAll,
				Records: kafka.NewRecordReader(records...),
			})
			cancel()
			if err == nil {
				err = res.Error
			}
			return err == nil
		}) {
			return nil
		}
		return fmt.Errorf("produce %s to %s/%d: %w", strings.Join(payloads, ","), name, partition, err)
	}
	return "kafka://" + strings.Join(brokers, ",") + "/" + name + "?start=earliest", publish
}

// newRabbitMQStream declares a stream queue on the RabbitMQ broker of the
// tests, deleted at cleanup, and publishes to it with confirmations.
func newRabbitMQStream(t *testing.T) (string, func(int, ...string) error) {
	uri := brokertest.AMQP(t)
	conn, err := amqp.Dial(uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("esbridge-e2e-%s-%d", topicNameRE.ReplaceAllString(t.Name(), "_"), time.Now().UnixNano())
	if _, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.QueueDelete(name, false, false, false) })
	publish := func(_ int, payloads ...string) error {
		var confirms []*amqp.DeferredConfirmation
		for _, p := range payloads {
			dc, err := ch.PublishWithDeferredConfirm("", name, false, false, amqp.Publishing{Body: []byte(p)})
			if err != nil {
				return fmt.Errorf("publish %q: %w", p, err)
			}
			confirms = append(confirms, dc)
		}
		for _, dc := range confirms {
			if !dc.Wait() {
				return fmt.Errorf("publish to %s: not confirmed", name)
			}
		}
		return nil
	}
	return uri + "?stream=" + name + "&start=earliest", publish
}
