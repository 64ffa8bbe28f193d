// This file holds the Kafka side of the broker scenarios (see broker.go):
// K and R on a real broker (-kafka-brokers, 127.0.0.1:9092 by default;
// scripts/kafka.sh starts one), on fresh -kafka-partitions topics.

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	kafkasource "github.com/esbridge/esbridge/source/kafka"
)

// kafkaOptions are the flags of the Kafka scenarios.
type kafkaOptions struct {
	brokers    string
	partitions int
	live       liveOptions   // K
	replay     replayOptions // R
}

func kafkaFlags(k *kafkaOptions) {
	flag.StringVar(&k.brokers, "kafka-brokers", "127.0.0.1:9092", "Kafka brokers of scenarios K and R, comma-separated")
	flag.IntVar(&k.partitions, "kafka-partitions", 6, "partitions of the topics of scenarios K and R")
	flag.IntVar(&k.live.rate, "kafka-rate", 2000, "messages per second produced in scenario K's latency run")
	flag.DurationVar(&k.live.paced, "kafka-duration", 10*time.Second, "producing time of scenario K's latency run")
	flag.DurationVar(&k.live.closed, "kafka-closed-duration", 10*time.Second, "producing time of scenario K's throughput run (closed loop, -window)")
	flag.IntVar(&k.replay.messages, "replay-messages", 1000000, "messages in scenario R's topic")
	flag.IntVar(&k.replay.runs, "replay-runs", 2, "runs of each reader in scenario R, alternating")
}

// kafkaBroker is the broker of scenarios K and R.
type kafkaBroker struct{ kafkaOptions }

func (k kafkaBroker) lib() string  { return "kafka" }
func (k kafkaBroker) addr() string { return k.brokers }

func (k kafkaBroker) readers() (plain, source string) { return "kafka-go", "kafkasource Next" }

func (k kafkaBroker) brokerList() []string { return strings.Split(k.brokers, ",") }

func (k kafkaBroker) source(topic string) (bridge.Source, error) {
	return kafkasource.New(kafkasource.Config{Brokers: k.brokerList(), Topic: topic})
}

// newKafkaServer is the server process of lib "kafka".
func newKafkaServer(cfg serverConfig) (server, error) {
	brokers := strings.Split(cfg.route.Addr, ",")
	src, err := kafkasource.New(kafkasource.Config{Brokers: brokers, Topic: cfg.route.Name})
	if err != nil {
		return nil, err
	}
	p := &kafkaProducer{}
	var balancer kafka.Balancer = &kafka.Hash{}
	if cfg.route.Keys > 0 {
		// Key kJ to partition J mod n: the keys spread evenly.
		balancer = kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
			j, _ := strconv.Atoi(strings.TrimPrefix(string(m.Key), "k"))
			return partitions[j%len(partitions)]
		})
	}
	p.w = &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: cfg.route.Name, Balancer: balancer,
		Async: true, BatchSize: 1000, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireOne,
		Completion: func(_ []kafka.Message, err error) {
			if err != nil && p.errs.Add(1) == 1 {
				fmt.Fprintln(os.Stderr, "bench: kafka server: produce:", err)
			}
		},
	}
	return newBridgeServer(cfg, src, p)
}

// kafkaProducer produces asynchronously, in batches.
type kafkaProducer struct {
	w    *kafka.Writer
	errs atomic.Uint64
}

func (p *kafkaProducer) send(key string, value []byte) {
	// Async: errors go to Completion.
	_ = p.w.WriteMessages(context.Background(), kafka.Message{Key: []byte(key), Value: value})
}

func (p *kafkaProducer) close() { _ = p.w.Close() }

// Topics.

func (k kafkaBroker) client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(k.brokerList()...), Timeout: 30 * time.Second}
}

func (k kafkaBroker) create(prefix string) (string, error) {
	name := fmt.Sprintf("esbridge-bench-%s-%d", prefix, time.Now().UnixNano())
	res, err := k.client().CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: k.partitions, ReplicationFactor: 1,
	}}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		return "", fmt.Errorf("create topic %s: %w", name, err)
	}
	return name, nil
}

func (k kafkaBroker) remove(name string) {
	var err error
	for range 3 { // the broker may be busy deleting the previous one
		var res *kafka.DeleteTopicsResponse
		res, err = k.client().DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{name}})
		if err == nil {
			err = res.Errors[name]
		}
		if err == nil || errors.Is(err, kafka.UnknownTopicOrPartition) {
			return
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete topic %s: %v\n", name, err)
	}
}

// Scenario R.

// produce writes n keyed messages of size bytes (sequence numbers 1..n)
// with four goroutines, each writing batches of 10,000 messages.
func (k kafkaBroker) produce(topic string, n, size int) (rateResult, error) {
	w := &kafka.Writer{
		Addr: kafka.TCP(k.brokerList()...), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 10000, BatchBytes: 16 << 20, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne,
	}
	defer w.Close()
	const chunk, workers = 10000, 4
	next := atomic.Int64{}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := time.Now()
	for g := range workers {
		wg.Go(func() {
			msgs := make([]kafka.Message, 0, chunk)
			for {
				from := int(next.Add(chunk)) - chunk + 1
				if from > n {
					return
				}
				msgs = msgs[:0]
				now := time.Now().UnixNano()
				for seq := from; seq <= min(n, from+chunk-1); seq++ {
					id := strconv.Itoa(seq)
					msgs = append(msgs, kafka.Message{Key: []byte(id), Value: brokerPayload(now, id, size)})
				}
				if err := w.WriteMessages(context.Background(), msgs...); err != nil {
					errs[g] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return rate(n, time.Since(start)), errors.Join(errs...)
}

// readPlain reads every partition from its start to its end with one
// kafka-go partition reader (kafka.Reader) each, concurrently, with the
// fetch sizes and waits of the bridge's source, and counts the messages:
// what a plain kafka-go reader of this topic does, the reference of the
// ratio.
func (k kafkaBroker) readPlain(topic string, n int) (r replayRun) {
	r.Reader = "kafka-go"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var total atomic.Int64
	errs := make([]error, k.partitions)
	var wg sync.WaitGroup
	machine := cpuMeter()
	cpu0 := cpuTime()
	start := time.Now()
	for p := range k.partitions {
		wg.Go(func() {
			kr := kafka.NewReader(kafka.ReaderConfig{
				Brokers: k.brokerList(), Topic: topic, Partition: p,
				QueueCapacity: 256, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 500 * time.Millisecond, ReadLagInterval: -1,
			})
			defer kr.Close()
			if err := kr.SetOffset(kafka.FirstOffset); err != nil {
				errs[p] = err
				return
			}
			for {
				m, err := kr.FetchMessage(ctx)
				if err != nil {
					errs[p] = fmt.Errorf("partition %d: %w", p, err)
					return
				}
				total.Add(1)
				if m.Offset+1 >= m.HighWaterMark {
					return
				}
			}
		})
	}
	wg.Wait()
	r.Rate = rate(int(total.Load()), time.Since(start))
	r.ClientCPU = cpuTime() - cpu0
	r.Machine = machine()
	if err := errors.Join(errs...); err != nil {
		r.Error = err.Error()
	} else if int(total.Load()) != n {
		r.Error = fmt.Sprintf("read %d messages, want %d", total.Load(), n)
	}
	return r
}
