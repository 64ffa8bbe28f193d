package amqp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// The tests run against a real RabbitMQ: AMQP_URL, or the broker of
// scripts/rabbitmq.sh on 127.0.0.1:5672. Without one, they are skipped, or
// fail when CI is set.

// testBroker is a connection to the real broker, for a test to declare
// queues and publish.
type testBroker struct {
	t   *testing.T
	uri string
	ch  *amqp.Channel
}

func broker(t *testing.T) *testBroker {
	t.Helper()
	b := &testBroker{t: t, uri: brokertest.AMQP(t)}
	b.connect()
	return b
}

// connect opens the test's connection and channel, closed at cleanup.
func (b *testBroker) connect() {
	b.t.Helper()
	conn, err := amqp.Dial(b.uri)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	b.ch = ch
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// name returns a queue or exchange name unique to the test.
func (b *testBroker) name() string {
	return fmt.Sprintf("esbridge-%s-%d", unsafeName.ReplaceAllString(b.t.Name(), "-"), time.Now().UnixNano())
}

// stream declares a stream queue unique to the test, with the extra
// arguments given, and deletes it at cleanup.
func (b *testBroker) stream(args amqp.Table) string {
	b.t.Helper()
	name := b.name()
	a := amqp.Table{"x-queue-type": "stream"}
	for k, v := range args {
		a[k] = v
	}
	if _, err := b.ch.QueueDeclare(name, true, false, false, false, a); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { b.deleteQueue(name) })
	return name
}

// deleteQueue deletes a queue on a connection of its own (the test's may
// be gone).
func (b *testBroker) deleteQueue(name string) {
	conn, err := amqp.Dial(b.uri)
	if err != nil {
		b.t.Errorf("delete queue %s: %v", name, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err == nil {
		_, err = ch.QueueDelete(name, false, false, false)
	}
	if err != nil {
		b.t.Errorf("delete queue %s: %v", name, err)
	}
}

// publish publishes bodies to exchange with routing key, waiting for the
// broker's confirmations.
func (b *testBroker) publish(exchange, key string, bodies ...string) {
	b.t.Helper()
	var confirms []*amqp.DeferredConfirmation
	for _, body := range bodies {
		dc, err := b.ch.PublishWithDeferredConfirm(exchange, key, false, false, amqp.Publishing{
			Body: []byte(body), Headers: amqp.Table{"n": body},
		})
		if err != nil {
			b.t.Fatal(err)
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		if !dc.Wait() {
			b.t.Fatal("publish not confirmed")
		}
	}
}

// bodies returns "prefix0" to "prefix{n-1}".
func bodies(prefix string, from, to int) []string {
	var s []string
	for i := from; i < to; i++ {
		s = append(s, prefix+strconv.Itoa(i))
	}
	return s
}

// source returns a Source on the test broker with the URL query given,
// closed at cleanup.
func (b *testBroker) source(query string) *Source {
	b.t.Helper()
	return newSource(b.t, b.uri, query)
}

func newSource(t *testing.T, uri, query string) *Source {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	u.RawQuery = query
	cfg, err := ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitConnected(t *testing.T, s *Source) {
	t.Helper()
	poll.Until(t, brokertest.Timeout, "the source is connected", s.Connected)
}

// read reads n messages from r and returns their bodies and the reader's
// position after each.
func read(t *testing.T, r bridge.Reader, n int) (got []string, positions []bridge.Position) {
	t.Helper()
	for range n {
		m := brokertest.Next(t, r)
		got = append(got, string(m.Data))
		positions = append(positions, r.Position())
	}
	return got, positions
}

func TestStreamPositions(t *testing.T) {
	brokertest.CheckLeaks(t)
	b := broker(t)
	name := b.stream(nil)
	b.publish("", name, bodies("m", 0, 10)...)
	s := b.source("stream=" + name)
	if info := s.Info(); !info.History || info.OffsetName != "offset" || !strings.HasSuffix(info.Stream, "/stream/"+name) {
		t.Errorf("Info = %+v", info)
	}

	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	var offsets []uint64
	for i := range 10 {
		m := brokertest.Next(t, r)
		if string(m.Data) != "m"+strconv.Itoa(i) {
			t.Fatalf("message %d = %q", i, m.Data)
		}
		if m.Subject != name || len(m.Headers) != 1 || m.Headers[0] != (bridge.Header{Key: "n", Value: string(m.Data)}) {
			t.Errorf("message %d: subject %q, headers %v", i, m.Subject, m.Headers)
		}
		if pos := r.Position(); !slices.Equal(pos, bridge.Position{m.Offset + 1}) {
			t.Errorf("after offset %d, Position = %v", m.Offset, pos)
		}
		if i > 0 && m.Offset <= offsets[i-1] {
			t.Errorf("offset %d after %d", m.Offset, offsets[i-1])
		}
		offsets = append(offsets, m.Offset)
	}
	brokertest.ExpectNothing(t, r)

	// From a position: the message at it and those after.
	r2 := brokertest.Open(t, s, bridge.Start{Position: bridge.Position{offsets[4]}})
	if got, _ := read(t, r2, 6); !slices.Equal(got, bodies("m", 4, 10)) {
		t.Errorf("from offset %d: %v", offsets[4], got)
	}

	// From the latest: only what comes after Open; its position is
	// known from the first message on.
	latest := brokertest.Open(t, s, bridge.Start{})
	if pos := latest.Position(); pos != nil {
		t.Errorf("latest reader before any message: Position = %v, want nil", pos)
	}
	b.publish("", name, "m10")
	if got, _ := read(t, latest, 1); got[0] != "m10" {
		t.Errorf("latest: %v", got)
	}
	if got, _ := read(t, r, 1); got[0] != "m10" {
		t.Errorf("earliest reader, after the first ten: %v", got)
	}

	// The position after the last message is waited at; one past it,
	// which the broker never issued, is refused.
	_, after := read(t, brokertest.Open(t, s, bridge.Start{Position: bridge.Position{offsets[9] + 1}}), 1) // m10
	head := brokertest.Open(t, s, bridge.Start{Position: after[0]})
	brokertest.ExpectNothing(t, head)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Open(ctx, bridge.Start{Position: bridge.Position{after[0][0] + 1}}); !errors.Is(err, bridge.ErrAhead) {
		t.Errorf("Open beyond the head: %v, want ErrAhead", err)
	}
}

// RabbitMQ gives offsets to entries of its own at the start of each
// segment: with tiny segments, offsets jump often. A reader opened at
// any position a reader had after a message goes on with the message after
// it, and no ExpiredError.
func TestStreamResumeEveryPosition(t *testing.T) {
	b := broker(t)
	name := b.stream(amqp.Table{"x-stream-max-segment-size-bytes": int64(300)})
	const n = 40
	b.publish("", name, bodies("payload-of-some-length-", 0, n)...)
	s := b.source("stream=" + name)
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	got, positions := read(t, r, n)
	if !slices.Equal(got, bodies("payload-of-some-length-", 0, n)) {
		t.Fatalf("read %v", got)
	}
	jumps := 0
	for i := 1; i < n; i++ {
		if positions[i][0] != positions[i-1][0]+1 {
			jumps++
		}
	}
	t.Logf("%d of %d offsets are not the one after the last", jumps, n-1)
	for i, pos := range positions[:n-1] {
		r := brokertest.Open(t, s, bridge.Start{Position: pos})
		if got, _ := read(t, r, 1); got[0] != "payload-of-some-length-"+strconv.Itoa(i+1) {
			t.Errorf("from %v, after message %d: %q", pos, i, got[0])
		}
		r.Close()
	}
}

// Retention deletes the oldest segments: a position in them gets an
// ExpiredError naming the offsets lost, and its Advance goes on with the
// first message the stream holds.
func TestStreamExpired(t *testing.T) {
	b := broker(t)
	name := b.stream(amqp.Table{
		"x-max-length-bytes":              int64(2000),
		"x-stream-max-segment-size-bytes": int64(500),
	})
	b.publish("", name, "m0")
	s := b.source("stream=" + name)
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	brokertest.Next(t, r)
	start := r.Position()
	r.Close()

	// In batches: RabbitMQ writes a batch as one chunk, and retention
	// deletes whole segments, the last one too if one chunk is larger
	// than the retention size.
	all := bodies("m", 1, 201)
	for i := 0; i < len(all); i += 10 {
		b.publish("", name, all[i:i+10]...)
	}
	r = brokertest.Open(t, s, bridge.Start{Position: start})
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Timeout)
	defer cancel()
	m, err := r.Next(ctx)
	var exp *bridge.ExpiredError
	if !errors.As(err, &exp) || !errors.Is(err, bridge.ErrExpired) {
		t.Fatalf("Next = %q, %v; want an ExpiredError", m.Data, err)
	}
	if len(exp.Resume) != 1 || exp.Resume[0] <= start[0] || !strings.Contains(exp.Lost, name) || !strings.Contains(exp.Lost, fmt.Sprintf("offsets %d to ", start[0])) {
		t.Errorf("ExpiredError %+v (%v), from %v", exp, err, start)
	}
	r.Close()

	r = brokertest.Open(t, s, bridge.Start{Position: exp.Resume})
	first := string(brokertest.Next(t, r).Data)
	i := slices.Index(all, first)
	if i <= 0 {
		t.Fatalf("after the gap, %q; want a later message of %v", first, all)
	}
	if got, _ := read(t, r, len(all)-i-1); !slices.Equal(got, all[i+1:]) {
		t.Errorf("after %q: %v", first, got)
	}
}

// Every reader of an exchange, in any number of sources (bridge
// instances), receives every message.
func TestExchangeEveryReader(t *testing.T) {
	brokertest.CheckLeaks(t)
	b := broker(t)
	ex := b.name()
	if err := b.ch.ExchangeDeclare(ex, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	s1 := b.source("exchange=" + ex + "&key=orders.*")
	s2 := b.source("exchange=" + ex + "&key=orders.*")
	if info := s1.Info(); info.History || !strings.HasSuffix(info.Stream, "/exchange/"+ex+"?key=orders.*") {
		t.Errorf("Info = %+v", info)
	}
	if _, err := s1.Open(context.Background(), bridge.Start{Earliest: true}); !errors.Is(err, bridge.ErrNoHistory) {
		t.Errorf("Open at the earliest = %v; want ErrNoHistory", err)
	}
	readers := []bridge.Reader{
		brokertest.Open(t, s1, bridge.Start{}), brokertest.Open(t, s1, bridge.Start{}), brokertest.Open(t, s2, bridge.Start{}),
	}
	b.publish(ex, "orders.new", bodies("o", 0, 20)...)
	b.publish(ex, "other.new", "not bound")
	for i, r := range readers {
		if got, _ := read(t, r, 20); !slices.Equal(got, bodies("o", 0, 20)) {
			t.Errorf("reader %d: %v", i, got)
		}
		brokertest.ExpectNothing(t, r)
	}
}

// The readers of a queue share its messages; each message reaches one
// reader, and a reader closed with messages unacknowledged gives them back.
func TestQueueShared(t *testing.T) {
	b := broker(t)
	q := b.name()
	if _, err := b.ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.deleteQueue(q) })
	s := b.source("queue=" + q + "&prefetch=4")
	if info := s.Info(); info.History || !strings.HasSuffix(info.Stream, "/queue/"+q) {
		t.Errorf("Info = %+v", info)
	}
	all := bodies("q", 0, 40)
	b.publish("", q, all...)
	r1 := brokertest.Open(t, s, bridge.Start{})
	got, _ := read(t, r1, 10)
	r1.Close() // some delivered, not all acknowledged: they go back
	r2 := brokertest.Open(t, s, bridge.Start{})
	seen := map[string]bool{}
	for _, g := range got {
		seen[g] = true
	}
	for len(seen) < len(all) {
		seen[string(brokertest.Next(t, r2).Data)] = true
	}
	for _, m := range all {
		if !seen[m] {
			t.Errorf("%s never received", m)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	b := broker(t)
	missing := b.source("stream=esbridge-no-such-stream")
	if _, err := missing.Open(context.Background(), bridge.Start{}); !errors.Is(err, bridge.ErrUnavailable) || !strings.Contains(err.Error(), "esbridge-no-such-stream") {
		t.Errorf("Open of a missing stream = %v; want ErrUnavailable naming it", err)
	}
	noExchange := b.source("exchange=esbridge-no-such-exchange")
	if _, err := noExchange.Open(context.Background(), bridge.Start{}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Errorf("Open of a missing exchange = %v; want ErrUnavailable", err)
	}
	q := b.source("queue=esbridge-no-such-queue")
	if _, err := q.Open(context.Background(), bridge.Start{Position: bridge.Position{1}}); !errors.Is(err, bridge.ErrNoHistory) {
		t.Errorf("Open of a queue at a position = %v; want ErrNoHistory", err)
	}

	// No broker: New succeeds, the source is not connected, Open says
	// unavailable at once.
	cfg, err := ParseURL(&url.URL{Scheme: "amqp", Host: "127.0.0.1:1", Path: "/", RawQuery: "stream=s"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Connected() {
		t.Error("Connected with no broker")
	}
	if _, err := s.Open(context.Background(), bridge.Start{}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Errorf("Open with no broker = %v; want ErrUnavailable", err)
	}
}

// TestStreamDeleted deletes the stream under a reader: Next returns
// ErrReset, Open says the stream is unavailable, and once it is declared
// again a reader reads the new stream from its start.
func TestStreamDeleted(t *testing.T) {
	b := broker(t)
	name := b.stream(nil)
	b.publish("", name, bodies("old", 0, 3)...)
	s := b.source("stream=" + name)
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	if got, _ := read(t, r, 3); !slices.Equal(got, bodies("old", 0, 3)) {
		t.Fatalf("got %v", got)
	}
	b.deleteQueue(name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if m, err := r.Next(ctx); !errors.Is(err, bridge.ErrReset) {
		t.Fatalf("Next after the stream was deleted: %+v, %v; want ErrReset", m, err)
	}
	if _, err := s.Open(ctx, bridge.Start{Earliest: true}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Fatalf("Open while the stream is deleted: %v, want ErrUnavailable", err)
	}
	if _, err := b.ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
		t.Fatal(err)
	}
	b.publish("", name, bodies("new", 0, 2)...)
	if got, _ := read(t, brokertest.Open(t, s, bridge.Start{Earliest: true}), 2); !slices.Equal(got, bodies("new", 0, 2)) {
		t.Errorf("the new stream: %v", got)
	}
}
