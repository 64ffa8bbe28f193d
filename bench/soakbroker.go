// This file holds the brokers and publishers of scenario T (see soak.go):
// a nats-server embedded in the orchestrator that can be restarted on its
// port with its JetStream store, and one paced publisher per route whose
// message g (from 1) goes to lane (g-1) mod lanes: a subject, a Kafka key
// and partition.

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"
)

// soakNATS is a nats-server with JetStream embedded in the orchestrator,
// restartable on the same port with the same store.
type soakNATS struct {
	mu   sync.Mutex
	srv  *natsserver.Server
	port int
	dir  string
}

func (n *soakNATS) opts() *natsserver.Options {
	return &natsserver.Options{Host: "127.0.0.1", Port: n.port, JetStream: true, StoreDir: n.dir, NoSigs: true, NoLog: true}
}

func startSoakNATS() (*soakNATS, error) {
	dir, err := os.MkdirTemp("", "esbridge-soak-nats-")
	if err != nil {
		return nil, err
	}
	n := &soakNATS{port: -1, dir: dir}
	if err := n.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	n.port = n.srv.Addr().(*net.TCPAddr).Port
	return n, nil
}

func (n *soakNATS) start() error {
	srv, err := natsserver.NewServer(n.opts())
	if err != nil {
		return err
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		return errors.New("embedded nats-server not ready in 20s")
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	return nil
}

func (n *soakNATS) stop() {
	n.mu.Lock()
	srv := n.srv
	n.mu.Unlock()
	srv.Shutdown()
	srv.WaitForShutdown()
}

// restart shuts the server down, waits down, and starts it again on its
// port.
func (n *soakNATS) restart(down time.Duration) error {
	n.stop()
	time.Sleep(down)
	return n.start()
}

func (n *soakNATS) close() {
	n.stop()
	os.RemoveAll(n.dir)
}

func (n *soakNATS) hostPort() string { return fmt.Sprintf("127.0.0.1:%d", n.port) }

// connect opens a client connection that reconnects for ever.
func (n *soakNATS) connect() (*nats.Conn, error) {
	return nats.Connect("nats://"+n.hostPort(), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
}

// A soakPub publishes one route's messages.
type soakPub interface {
	// publish sends message body of lane and returns once the broker
	// holds it (core NATS: once it is written to the connection).
	publish(g uint64, lane int, body []byte) error
	close()
}

// A soakRoute is one route of the soak and what was published on it.
type soakRoute struct {
	name    string // the payload's first field and the route's path without "/"
	lanes   int
	ordered bool   // one order over every lane (all but Kafka)
	history bool   // false on core NATS: a gap there is legitimate
	url     string // the -route URL
	filter  func(lane int) string
	since   bool // since= is served
	pub     soakPub
	cleanup func()
	// read, on a route with history, reads the broker's stream from its
	// start, calling f with each message, until a read waits idle.
	read func(idle time.Duration, f func(body []byte)) error

	issued atomic.Uint64 // the last g whose publication began
	acked  atomic.Uint64 // the last g the broker holds

	mu        sync.Mutex
	times     []int64 // start of the last attempt to publish g, UnixNano, at index g-1
	ackTimes  []int64 // when the broker held g, at index g-1
	uncertain map[uint64]bool
}

func (r *soakRoute) path() string { return "/" + r.name }

func (r *soakRoute) lane(g uint64) int { return int((g - 1) % uint64(r.lanes)) }

// pubTime returns when the last attempt to publish g began: the broker's
// timestamp of g is not earlier.
func (r *soakRoute) pubTime(g uint64) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g == 0 || g > uint64(len(r.times)) {
		return time.Time{}
	}
	return time.Unix(0, r.times[g-1])
}

// ackTime returns when the broker held g: its timestamp is not later.
func (r *soakRoute) ackTime(g uint64) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g == 0 || g > uint64(len(r.ackTimes)) {
		return time.Time{}
	}
	return time.Unix(0, r.ackTimes[g-1])
}

// isUncertain tells whether g was sent more than once (a retry after an
// error), so that the broker may hold it twice.
func (r *soakRoute) isUncertain(g uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.uncertain[g]
}

// held reads what the broker holds of the route: which messages up to n,
// and how many it holds twice, or nil for a route without history.
func (r *soakRoute) held(n uint64) (have []bool, twice int, err error) {
	if r.read == nil {
		return nil, 0, nil
	}
	have = make([]bool, n+1)
	err = r.read(5*time.Second, func(body []byte) {
		_, rest, _ := strings.Cut(string(body), " ")
		gs, _, _ := strings.Cut(rest, " ")
		g, _ := strconv.ParseUint(gs, 10, 64)
		if g == 0 || g > n {
			return
		}
		if have[g] {
			twice++
		}
		have[g] = true
	})
	if err == nil && n > 0 && !slices.Contains(have[1:], true) {
		err = errors.New("nothing read (is the broker down?)")
	}
	return have, twice, err
}

// soakPayload is "ROUTE G " padded with 'x' to size bytes.
func soakPayload(route string, g uint64, size int) []byte {
	b := make([]byte, 0, max(size, 32))
	b = append(b, route...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, g, 10)
	b = append(b, ' ')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// run publishes rate messages a second until ctx ends, each once the
// previous one is held by the broker, retrying one that fails until it
// is sent.
func (r *soakRoute) run(ctx context.Context, rate, size int, errs *atomic.Int64) {
	start, sent := time.Now(), 0
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := int(time.Since(start).Seconds()*float64(rate)) - sent
		for ; due > 0 && ctx.Err() == nil; due-- {
			g := r.issued.Load() + 1
			body := soakPayload(r.name, g, size)
			r.mu.Lock()
			r.times = append(r.times, time.Now().UnixNano())
			r.mu.Unlock()
			r.issued.Store(g)
			for try := 0; ; try++ {
				if try > 0 {
					r.mu.Lock()
					r.uncertain[g] = true
					r.times[g-1] = time.Now().UnixNano()
					r.mu.Unlock()
				}
				err := r.pub.publish(g, r.lane(g), body)
				if err == nil {
					break
				}
				errs.Add(1)
				select {
				case <-ctx.Done():
					// g may or may not be held: the end of the run
					// waits for the clients up to acked only.
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
			r.mu.Lock()
			r.ackTimes = append(r.ackTimes, time.Now().UnixNano())
			r.mu.Unlock()
			r.acked.Store(g)
			sent++
		}
	}
}

// JetStream: a stream of subjects soak.js.l0, soak.js.l1; a message ID
// per g, so that a retry is not stored twice.

type jsPub struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func (p *jsPub) publish(g uint64, lane int, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := p.js.Publish(ctx, fmt.Sprintf("soak.js.l%d", lane), body, jetstream.WithMsgID(strconv.FormatUint(g, 10)))
	return err
}

func (p *jsPub) close() { p.nc.Close() }

func jsRoute(n *soakNATS) (*soakRoute, error) {
	nc, err := n.connect()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	name := fmt.Sprintf("SOAK_%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"soak.js.>"}, Storage: jetstream.FileStorage}); err != nil {
		nc.Close()
		return nil, err
	}
	return &soakRoute{
		name: "js", lanes: 2, ordered: true, history: true, since: true,
		url:    "jetstream://" + n.hostPort() + "/" + name + "?type=subject&max_since=1h",
		filter: func(lane int) string { return fmt.Sprintf("type=soak.js.l%d", lane) },
		pub:    &jsPub{nc: nc, js: js},
		read: func(idle time.Duration, f func([]byte)) error {
			nc, err := n.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
			if err != nil {
				return err
			}
			it, err := cons.Messages()
			if err != nil {
				return err
			}
			defer it.Stop()
			for {
				ictx, icancel := context.WithTimeout(ctx, idle)
				m, err := it.Next(jetstream.NextContext(ictx))
				icancel()
				if err != nil {
					return nil
				}
				f(m.Data())
			}
		},
	}, nil
}

// Core NATS: subjects soak.core.l0, soak.core.l1.

type natsPub struct{ nc *nats.Conn }

func (p natsPub) publish(_ uint64, lane int, body []byte) error {
	return p.nc.Publish(fmt.Sprintf("soak.core.l%d", lane), body)
}

func (p natsPub) close() {
	_ = p.nc.Flush()
	p.nc.Close()
}

func natsRoute(n *soakNATS) (*soakRoute, error) {
	nc, err := n.connect()
	if err != nil {
		return nil, err
	}
	return &soakRoute{
		name: "nats", lanes: 2, ordered: true,
		url:    "nats://" + n.hostPort() + "/soak.core.>",
		filter: func(lane int) string { return fmt.Sprintf("subject=soak.core.l%d", lane) },
		pub:    natsPub{nc: nc},
	}, nil
}

// Kafka: a topic of -soak-kafka-partitions partitions, key kJ on
// partition J.

type kafkaPub struct{ w *kafka.Writer }

func (p kafkaPub) publish(_ uint64, lane int, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.w.WriteMessages(ctx, kafka.Message{Key: []byte("k" + strconv.Itoa(lane)), Value: body})
}

func (p kafkaPub) close() { _ = p.w.Close() }

func kafkaRoute(k kafkaBroker) (*soakRoute, error) {
	topic, err := k.create("soak")
	if err != nil {
		return nil, err
	}
	w := &kafka.Writer{
		Addr: kafka.TCP(k.brokerList()...), Topic: topic,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
			p, _ := strconv.Atoi(string(m.Key[1:]))
			return partitions[p%len(partitions)]
		}),
		BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireOne,
		MaxAttempts: 1, // retried by the route, which knows the message may be held twice
	}
	return &soakRoute{
		name: "kafka", lanes: k.partitions, since: true,
		url:     "kafka://" + k.brokers + "/" + topic + "?max_since=1h",
		filter:  func(lane int) string { return fmt.Sprintf("key=k%d", lane) },
		pub:     kafkaPub{w: w},
		cleanup: func() { k.remove(topic) },
		read: func(idle time.Duration, f func([]byte)) error {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for p := range k.partitions {
				wg.Go(func() {
					kr := kafka.NewReader(kafka.ReaderConfig{Brokers: k.brokerList(), Topic: topic, Partition: p, MaxWait: 200 * time.Millisecond, ReadLagInterval: -1})
					defer kr.Close()
					_ = kr.SetOffset(kafka.FirstOffset)
					for {
						ctx, cancel := context.WithTimeout(context.Background(), idle)
						m, err := kr.FetchMessage(ctx)
						cancel()
						if err != nil {
							return
						}
						mu.Lock()
						f(m.Value)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			return nil
		},
	}, nil
}

// RabbitMQ: a stream queue, confirmed publications, a new connection
// after a failure.

type amqpPub struct {
	a      amqpBroker
	stream string
	conn   *amqp.Connection
	ch     *amqp.Channel
}

func (p *amqpPub) publish(_ uint64, _ int, body []byte) error {
	if p.ch == nil {
		conn, ch, err := p.a.channel()
		if err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			conn.Close()
			return err
		}
		p.conn, p.ch = conn, ch
	}
	dc, err := p.ch.PublishWithDeferredConfirm("", p.stream, false, false, amqp.Publishing{Body: body})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var ok bool
		if ok, err = dc.WaitContext(ctx); err == nil && !ok {
			err = errors.New("not confirmed")
		}
	}
	if err != nil {
		p.close()
	}
	return err
}

func (p *amqpPub) close() {
	if p.conn != nil {
		_ = p.conn.Close()
	}
	p.conn, p.ch = nil, nil
}

func amqpRoute(a amqpBroker) (*soakRoute, error) {
	stream, err := a.create("soak")
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(a.url)
	if err != nil {
		return nil, err
	}
	u.RawQuery = url.Values{"stream": {stream}, "max_since": {"1h"}}.Encode()
	return &soakRoute{
		name: "rmq", lanes: 1, ordered: true, history: true, since: true,
		url:     u.String(),
		pub:     &amqpPub{a: a, stream: stream},
		cleanup: func() { a.remove(stream) },
		read: func(idle time.Duration, f func([]byte)) error {
			conn, ch, err := a.channel()
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := ch.Qos(1000, 0, false); err != nil {
				return err
			}
			deliveries, err := ch.Consume(stream, "", false, false, false, false, amqp.Table{"x-stream-offset": "first"})
			if err != nil {
				return err
			}
			for {
				select {
				case d, ok := <-deliveries:
					if !ok {
						return errors.New("deliveries closed")
					}
					f(d.Body)
					_ = d.Ack(false)
				case <-time.After(idle):
					return nil
				}
			}
		},
	}, nil
}
