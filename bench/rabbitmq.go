// This file holds the RabbitMQ side of the broker scenarios (see
// broker.go): Q and S on a real broker (-amqp-url,
// amqp://guest:guest@127.0.0.1:5672/ by default; scripts/rabbitmq.sh
// starts one), on fresh stream queues read by offset over AMQP 0-9-1
// (source/amqp, stream=NAME).

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esbridge/esbridge/bridge"
	amqpsource "github.com/esbridge/esbridge/source/amqp"
)

// amqpOptions are the flags of the RabbitMQ scenarios.
type amqpOptions struct {
	url    string
	live   liveOptions   // Q
	replay replayOptions // S
}

func amqpFlags(a *amqpOptions) {
	flag.StringVar(&a.url, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ broker of scenarios Q and S")
	flag.IntVar(&a.live.rate, "amqp-rate", 1000, "messages per second published in scenario Q's latency run")
	flag.DurationVar(&a.live.paced, "amqp-duration", 10*time.Second, "publishing time of scenario Q's latency run")
	flag.DurationVar(&a.live.closed, "amqp-closed-duration", 10*time.Second, "publishing time of scenario Q's throughput run (closed loop, -window)")
	flag.IntVar(&a.replay.messages, "amqp-replay-messages", 500000, "messages in scenario S's stream queue")
	flag.IntVar(&a.replay.runs, "amqp-replay-runs", 2, "runs of each reader in scenario S, alternating")
}

// amqpBroker is the broker of scenarios Q and S.
type amqpBroker struct{ amqpOptions }

func (a amqpBroker) lib() string  { return "rabbitmq" }
func (a amqpBroker) addr() string { return a.url }

func (a amqpBroker) readers() (plain, source string) { return "amqp091-go", "source/amqp Next" }

func (a amqpBroker) source(stream string) (bridge.Source, error) {
	return amqpSource(a.url, stream)
}

// amqpSource returns the bridge's source of the stream queue stream, from
// its route URL.
func amqpSource(broker, stream string) (bridge.Source, error) {
	u, err := url.Parse(broker)
	if err != nil {
		return nil, err
	}
	u.RawQuery = url.Values{"stream": {stream}}.Encode()
	cfg, err := amqpsource.ParseURL(u)
	if err != nil {
		return nil, err
	}
	return amqpsource.New(cfg)
}

// newAMQPServer is the server process of lib "rabbitmq".
func newAMQPServer(cfg serverConfig) (server, error) {
	src, err := amqpSource(cfg.route.Addr, cfg.route.Name)
	if err != nil {
		return nil, err
	}
	conn, err := amqp.Dial(cfg.route.Addr)
	if err != nil {
		src.Close()
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		src.Close()
		return nil, err
	}
	return newBridgeServer(cfg, src, &amqpProducer{conn: conn, ch: ch, stream: cfg.route.Name})
}

// amqpProducer publishes to a stream queue through the default exchange,
// on one channel, without confirmations: the clients tell what arrived.
type amqpProducer struct {
	conn   *amqp.Connection
	ch     *amqp.Channel
	stream string
	errs   atomic.Uint64
}

func (p *amqpProducer) send(_ string, value []byte) {
	err := p.ch.PublishWithContext(context.Background(), "", p.stream, false, false, amqp.Publishing{Body: value})
	if err != nil && p.errs.Add(1) == 1 {
		fmt.Fprintln(os.Stderr, "bench: rabbitmq server: publish:", err)
	}
}

func (p *amqpProducer) close() { _ = p.conn.Close() }

// Stream queues.

// channel dials the broker and opens a channel; closing the connection
// closes both.
func (a amqpBroker) channel() (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.Dial(a.url)
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, ch, nil
}

func (a amqpBroker) create(prefix string) (string, error) {
	name := fmt.Sprintf("esbridge-bench-%s-%d", prefix, time.Now().UnixNano())
	conn, ch, err := a.channel()
	if err != nil {
		return "", fmt.Errorf("create stream %s: %w", name, err)
	}
	defer conn.Close()
	if _, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
		return "", fmt.Errorf("create stream %s: %w", name, err)
	}
	return name, nil
}

func (a amqpBroker) remove(name string) {
	conn, ch, err := a.channel()
	if err == nil {
		defer conn.Close()
		_, err = ch.QueueDelete(name, false, false, false)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete stream %s: %v\n", name, err)
	}
}

// Scenario S.

// produce publishes n messages of size bytes (sequence numbers 1..n) with
// four goroutines, each on a channel of its own in confirm mode,
// publishing batches of 1,000 messages and waiting for their
// confirmations.
func (a amqpBroker) produce(stream string, n, size int) (rateResult, error) {
	conn, err := amqp.Dial(a.url)
	if err != nil {
		return rateResult{}, err
	}
	defer conn.Close()
	const chunk, workers = 1000, 4
	next := atomic.Int64{}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := time.Now()
	for g := range workers {
		wg.Go(func() {
			errs[g] = func() error {
				ch, err := conn.Channel()
				if err != nil {
					return err
				}
				defer ch.Close()
				if err := ch.Confirm(false); err != nil {
					return err
				}
				confirms := make([]*amqp.DeferredConfirmation, 0, chunk)
				for {
					from := int(next.Add(chunk)) - chunk + 1
					if from > n {
						return nil
					}
					confirms = confirms[:0]
					now := time.Now().UnixNano()
					for seq := from; seq <= min(n, from+chunk-1); seq++ {
						dc, err := ch.PublishWithDeferredConfirm("", stream, false, false,
							amqp.Publishing{Body: brokerPayload(now, strconv.Itoa(seq), size)})
						if err != nil {
							return err
						}
						confirms = append(confirms, dc)
					}
					for _, dc := range confirms {
						if !dc.Wait() {
							return fmt.Errorf("stream %s: message %d not confirmed", stream, dc.DeliveryTag)
						}
					}
				}
			}()
		})
	}
	wg.Wait()
	return rate(n, time.Since(start)), errors.Join(errs...)
}

// readPlain reads the stream from its first message with one amqp091-go
// consumer as the bridge's source does: prefetch amqpsource.DefaultPrefetch,
// manual acknowledgements of half the prefetch at a time, x-stream-offset
// "first". It counts the deliveries until it has n: the reference of the
// ratio.
func (a amqpBroker) readPlain(stream string, n int) (r replayRun) {
	r.Reader = "amqp091-go"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	machine := cpuMeter()
	cpu0 := cpuTime()
	start := time.Now()
	got, err := func() (int, error) {
		conn, ch, err := a.channel()
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		if err := ch.Qos(amqpsource.DefaultPrefetch, 0, false); err != nil {
			return 0, err
		}
		deliveries, err := ch.Consume(stream, "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
		if err != nil {
			return 0, err
		}
		got, unacked := 0, 0
		for got < n {
			select {
			case d, ok := <-deliveries:
				if !ok {
					return got, errors.New("deliveries closed")
				}
				got++
				if unacked++; unacked >= amqpsource.DefaultPrefetch/2 {
					if err := d.Ack(true); err != nil {
						return got, err
					}
					unacked = 0
				}
			case <-ctx.Done():
				return got, ctx.Err()
			}
		}
		return got, nil
	}()
	r.Rate = rate(got, time.Since(start))
	r.ClientCPU = cpuTime() - cpu0
	r.Machine = machine()
	if err != nil {
		r.Error = err.Error()
	}
	return r
}
