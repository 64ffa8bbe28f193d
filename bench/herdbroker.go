// This file holds the brokers of scenario H (see herd.go): JetStream on a
// nats-server embedded in the orchestrator, Kafka with 1 or 6 partitions,
// RabbitMQ stream queues. For each: a fresh stream, an ordered producer
// of herd payloads, a count of the broker readers (consumers) the bridge
// has open, and a plain consumer for the baseline.

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
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

// herdBroker is one broker configuration of scenario H.
type herdBroker interface {
	name() string // for tables
	partitions() int
	create() (string, error)
	remove(stream string)
	// url is the route URL of stream, without the query of route
	// options; query is "?" or "&" to append those with.
	url(stream string) (u, query string)
	// send produces msgs in order, msgs[i] to partition parts[i], and
	// returns once the broker holds them all.
	producer(stream string) (herdSender, error)
	// readers counts the broker readers of the bridge process pid on
	// stream; unit says what is counted.
	readers(stream string, pid int) (int, error)
	unit() string
	// plain reads the first n messages of stream with a plain consumer of
	// the broker's Go client and returns how long it took.
	plain(stream string, n int) (time.Duration, error)
	close()
}

type herdSender interface {
	send(msgs [][]byte, parts []int) error
	close()
}

// herdFeed produces herd payloads to a stream: message i (from 1) goes to
// partition (i-1) mod P as its K-th message there, K = (i-1)/P + 1.
type herdFeed struct {
	s        herdSender
	parts    int
	size     int
	head     atomic.Uint64 // last index the broker holds
	stopOnce sync.Once
	stopC    chan struct{}
	done     chan struct{}
	errMu    sync.Mutex
	err      error
}

func newHerdFeed(s herdSender, parts, size int) *herdFeed {
	return &herdFeed{s: s, parts: parts, size: size, stopC: make(chan struct{}), done: make(chan struct{})}
}

// kOf returns K per partition once messages 1..i are produced.
func (f *herdFeed) kOf(i uint64) []uint64 {
	k := make([]uint64, f.parts)
	for p := range f.parts {
		if i > uint64(p) {
			k[p] = (i-1-uint64(p))/uint64(f.parts) + 1
		}
	}
	return k
}

// herdPayload returns "TS I P K " padded with 'x' to size bytes.
func herdPayload(i uint64, p int, k uint64, size int) []byte {
	b := make([]byte, 0, max(size, 64))
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, i, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(p), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, k, 10)
	b = append(b, ' ')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// produce sends the next n messages, in one call.
func (f *herdFeed) produce(n int) error {
	first := f.head.Load() + 1
	msgs := make([][]byte, n)
	parts := make([]int, n)
	for j := range n {
		i := first + uint64(j)
		p := int((i - 1) % uint64(f.parts))
		parts[j] = p
		msgs[j] = herdPayload(i, p, (i-1)/uint64(f.parts)+1, f.size)
	}
	if err := f.s.send(msgs, parts); err != nil {
		return err
	}
	f.head.Add(uint64(n))
	return nil
}

// prefill produces n messages in batches of 1,000.
func (f *herdFeed) prefill(n int) error {
	for n > 0 {
		b := min(n, 1000)
		if err := f.produce(b); err != nil {
			return err
		}
		n -= b
	}
	return nil
}

// live produces rate messages a second until stop, catching up in batches
// when a send took long; at most limit in all (a bound).
func (f *herdFeed) live(rate int, limit time.Duration) {
	go func() {
		defer close(f.done)
		start, sent := time.Now(), 0
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-f.stopC:
				return
			case <-t.C:
			}
			el := time.Since(start)
			if el > limit {
				return
			}
			due := int(el.Seconds()*float64(rate)) - sent
			if due <= 0 {
				continue
			}
			due = min(due, 1000)
			if err := f.produce(due); err != nil {
				f.errMu.Lock()
				if f.err == nil {
					f.err = err
				}
				f.errMu.Unlock()
				time.Sleep(100 * time.Millisecond)
				continue
			}
			sent += due
		}
	}()
}

func (f *herdFeed) stop() error {
	f.stopOnce.Do(func() { close(f.stopC) })
	<-f.done
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.err
}

// JetStream.

// jsBroker is a nats-server with JetStream embedded in the orchestrator.
type jsBroker struct {
	srv *natsserver.Server
	dir string
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newJSBroker() (*jsBroker, error) {
	dir, err := os.MkdirTemp("", "esbridge-bench-js-")
	if err != nil {
		return nil, err
	}
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		os.RemoveAll(dir)
		return nil, errors.New("embedded nats-server not ready in 10s")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		srv.Shutdown()
		os.RemoveAll(dir)
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		os.RemoveAll(dir)
		return nil, err
	}
	return &jsBroker{srv: srv, dir: dir, nc: nc, js: js}, nil
}

func (b *jsBroker) name() string    { return "JetStream" }
func (b *jsBroker) partitions() int { return 1 }
func (b *jsBroker) unit() string    { return "consumers" }

func (b *jsBroker) close() {
	b.nc.Close()
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
	os.RemoveAll(b.dir)
}

func (b *jsBroker) create() (string, error) {
	name := fmt.Sprintf("HERD_%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := b.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, Storage: jetstream.FileStorage})
	return name, err
}

func (b *jsBroker) remove(stream string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.js.DeleteStream(ctx, stream)
}

func (b *jsBroker) url(stream string) (string, string) {
	u, _ := url.Parse(b.srv.ClientURL())
	return "jetstream://" + u.Host + "/" + stream, "?"
}

func (b *jsBroker) producer(stream string) (herdSender, error) {
	return &jsSender{js: b.js, subject: strings.ToLower(stream) + ".m"}, nil
}

type jsSender struct {
	js      jetstream.JetStream
	subject string
}

func (s *jsSender) send(msgs [][]byte, _ []int) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := s.js.PublishAsync(s.subject, m)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-time.After(30 * time.Second):
			return errors.New("jetstream: no ack in 30s")
		}
	}
	return nil
}

func (s *jsSender) close() {}

func (b *jsBroker) readers(stream string, _ int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := b.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.Consumers, nil
}

func (b *jsBroker) plain(stream string, n int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	cons, err := b.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	for range n {
		if _, err := it.Next(jetstream.NextContext(ctx)); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// Kafka.

type kafkaHerd struct {
	k kafkaBroker
}

func (b kafkaHerd) name() string    { return fmt.Sprintf("Kafka %dp", b.k.partitions) }
func (b kafkaHerd) partitions() int { return b.k.partitions }
func (b kafkaHerd) unit() string    { return "TCP conns" }
func (b kafkaHerd) close()          {}

func (b kafkaHerd) create() (string, error) { return b.k.create("h") }
func (b kafkaHerd) remove(topic string)     { b.k.remove(topic) }

func (b kafkaHerd) url(topic string) (string, string) {
	return "kafka://" + b.k.brokers + "/" + topic, "?"
}

func (b kafkaHerd) producer(topic string) (herdSender, error) {
	w := &kafka.Writer{
		Addr: kafka.TCP(b.k.brokerList()...), Topic: topic,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
			p, _ := strconv.Atoi(string(m.Key))
			return partitions[p%len(partitions)]
		}),
		BatchSize: 1000, BatchBytes: 16 << 20, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireOne,
	}
	return &kafkaSender{w: w}, nil
}

type kafkaSender struct{ w *kafka.Writer }

func (s *kafkaSender) send(msgs [][]byte, parts []int) error {
	km := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		km[i] = kafka.Message{Key: []byte(strconv.Itoa(parts[i])), Value: m}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.w.WriteMessages(ctx, km...)
}

func (s *kafkaSender) close() { _ = s.w.Close() }

// readers counts the established TCP connections of process pid to the
// Kafka brokers' ports.
func (b kafkaHerd) readers(_ string, pid int) (int, error) {
	ports := map[string]bool{}
	for _, a := range b.k.brokerList() {
		if _, p, err := splitPort(a); err == nil {
			ports[p] = true
		}
	}
	return tcpConns(pid, ports)
}

func splitPort(addr string) (string, string, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", fmt.Errorf("no port in %q", addr)
	}
	port, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		return "", "", err
	}
	return addr[:i], fmt.Sprintf("%04X", port), nil
}

// tcpConns counts the established TCP sockets of process pid whose remote
// port (4 hex digits, as in /proc/net/tcp) is in ports.
func tcpConns(pid int, ports map[string]bool) (int, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(fs) < 10 || fs[3] != "01" {
				continue
			}
			rem := fs[2]
			if ports[rem[strings.LastIndexByte(rem, ':')+1:]] && inodes[fs[9]] {
				n++
			}
		}
		fh.Close()
	}
	return n, nil
}

func (b kafkaHerd) plain(topic string, n int) (time.Duration, error) {
	r := b.k.readPlainN(topic, n)
	if r.Error != "" {
		return r.Rate.Elapsed, errors.New(r.Error)
	}
	return r.Rate.Elapsed, nil
}

// readPlainN reads the first n messages of the topic, all partitions
// concurrently with a kafka-go partition reader each, as readPlain does
// for a whole topic.
func (k kafkaBroker) readPlainN(topic string, n int) (r replayRun) {
	r.Reader = "kafka-go"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var total atomic.Int64
	errs := make([]error, k.partitions)
	var wg sync.WaitGroup
	start := time.Now()
	for p := range k.partitions {
		// Partition p holds messages p+1, p+1+P, …: its share of the first n.
		want := 0
		if n > p {
			want = (n-1-p)/k.partitions + 1
		}
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
			for range want {
				if _, err := kr.FetchMessage(ctx); err != nil {
					errs[p] = fmt.Errorf("partition %d: %w", p, err)
					return
				}
				total.Add(1)
			}
		})
	}
	wg.Wait()
	r.Rate = rate(int(total.Load()), time.Since(start))
	if err := errors.Join(errs...); err != nil {
		r.Error = err.Error()
	}
	return r
}

// RabbitMQ.

type amqpHerd struct {
	a amqpBroker
}

func (b *amqpHerd) name() string    { return "RabbitMQ" }
func (b *amqpHerd) partitions() int { return 1 }
func (b *amqpHerd) unit() string    { return "consumers" }
func (b *amqpHerd) close()          {}

func (b *amqpHerd) create() (string, error) { return b.a.create("h") }
func (b *amqpHerd) remove(stream string)    { b.a.remove(stream) }

func (b *amqpHerd) url(stream string) (string, string) {
	u, err := url.Parse(b.a.url)
	if err != nil {
		return b.a.url, "&"
	}
	u.RawQuery = url.Values{"stream": {stream}}.Encode()
	return u.String(), "&"
}

func (b *amqpHerd) producer(stream string) (herdSender, error) {
	conn, ch, err := b.a.channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		return nil, err
	}
	return &amqpSender{conn: conn, ch: ch, stream: stream}, nil
}

type amqpSender struct {
	conn   *amqp.Connection
	ch     *amqp.Channel
	stream string
}

func (s *amqpSender) send(msgs [][]byte, _ []int) error {
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for _, m := range msgs {
		dc, err := s.ch.PublishWithDeferredConfirm("", s.stream, false, false, amqp.Publishing{Body: m})
		if err != nil {
			return err
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		if !dc.Wait() {
			return fmt.Errorf("stream %s: message %d not confirmed", s.stream, dc.DeliveryTag)
		}
	}
	return nil
}

func (s *amqpSender) close() { _ = s.conn.Close() }

// readers returns the stream queue's consumer count from rabbitmqctl
// list_queues (only the bridge consumes it in this run). A passive
// declare reports no consumers for a stream queue, and the management
// plugin may be off: rabbitmqctl is slow (1 to 5 s a call on a busy
// machine), so this count is sampled far less often than the others.
func (b *amqpHerd) readers(stream string, _ int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "consumers").Output()
	if err != nil {
		return 0, fmt.Errorf("rabbitmqctl list_queues: %w", err)
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == stream {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("rabbitmqctl list_queues: no queue %s", stream)
}

func (b *amqpHerd) plain(stream string, n int) (time.Duration, error) {
	r := b.a.readPlain(stream, n)
	if r.Error != "" {
		return r.Rate.Elapsed, errors.New(r.Error)
	}
	return r.Rate.Elapsed, nil
}
