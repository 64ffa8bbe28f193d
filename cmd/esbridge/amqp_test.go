package main

// Program tests of RabbitMQ routes, against a real broker: AMQP_URL, or
// the one scripts/rabbitmq.sh starts on 127.0.0.1:5672 (`make test` does).
// Without one they are skipped, or fail when CI is set.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// rabbit declares what a test needs on the broker, deletes it at cleanup,
// and publishes with confirmations, reconnecting after a broker restart.
type rabbit struct {
	t    *testing.T
	uri  string
	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
}

func newRabbit(t *testing.T) *rabbit {
	t.Helper()
	r := &rabbit{t: t, uri: brokertest.AMQP(t)}
	if err := r.connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.conn.Close()
	})
	return r
}

// connect (re)opens the connection and a channel in confirm mode.
func (r *rabbit) connect() error {
	if r.conn != nil {
		r.conn.Close()
	}
	conn, err := amqp.Dial(r.uri)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return err
	}
	r.conn, r.ch = conn, ch
	return nil
}

// do runs f on the channel, reconnecting and retrying while the broker
// is restarting.
func (r *rabbit) do(what string, f func(*amqp.Channel) error) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	tried := false
	poll.UntilNil(r.t, waitFor, what+" succeeds", func() error {
		if tried {
			r.connect()
		}
		tried = true
		return f(r.ch)
	})
}

// name returns a queue or exchange name unique to the test.
func (r *rabbit) name() string {
	return fmt.Sprintf("esbridge-%s-%d", unsafeChars.Replace(r.t.Name()), time.Now().UnixNano())
}

var unsafeChars = strings.NewReplacer("/", "-", " ", "-", "=", "-", ",", "-")

// stream declares a stream queue, with the extra arguments given, and
// returns its name.
func (r *rabbit) stream(args amqp.Table) string {
	r.t.Helper()
	name := r.name()
	a := amqp.Table{"x-queue-type": "stream"}
	for k, v := range args {
		a[k] = v
	}
	r.do("declare stream", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(name, true, false, false, false, a)
		return err
	})
	r.t.Cleanup(func() {
		r.do("delete stream", func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(name, false, false, false)
			return err
		})
	})
	return name
}

// exchange declares a durable fanout exchange and returns its name.
func (r *rabbit) exchange() string {
	r.t.Helper()
	name := r.name()
	r.do("declare exchange", func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(name, "fanout", true, false, false, false, nil)
	})
	r.t.Cleanup(func() {
		r.do("delete exchange", func(ch *amqp.Channel) error { return ch.ExchangeDelete(name, false, false) })
	})
	return name
}

// route returns the -route value PATH=amqp URL with the query given.
func (r *rabbit) route(path, query string) string {
	u, err := url.Parse(r.uri)
	if err != nil {
		r.t.Fatal(err)
	}
	u.RawQuery = query
	return path + "=" + u.String()
}

// publisher returns a function that publishes payloads, in order, to an
// exchange ("" for the default one, whose routing key is a queue name),
// waiting for the broker's confirmations.
func (r *rabbit) publisher(exchange, key string) func(...string) {
	return func(payloads ...string) {
		r.t.Helper()
		r.do("publish", func(ch *amqp.Channel) error {
			var confirms []*amqp.DeferredConfirmation
			for _, p := range payloads {
				dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, amqp.Publishing{Body: []byte(p)})
				if err != nil {
					return err
				}
				confirms = append(confirms, dc)
			}
			for _, dc := range confirms {
				if !dc.Wait() {
					return fmt.Errorf("not confirmed")
				}
			}
			return nil
		})
	}
}

// A stream route: live delivery in order; a client that disconnects
// resumes from its ID, by header or query, from the broker (backlog 3);
// the same ID resumes on a second instance and after a bridge restart.
func TestAMQPStreamResume(t *testing.T) {
	rb := newRabbit(t)
	stream := rb.stream(nil)
	publish := rb.publisher("", stream)
	route := rb.route("/s", "stream="+stream)
	b1 := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "3", "-route", route)
	b2 := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	b1.WaitReadyz(200)
	b2.WaitReadyz(200)

	c := connect(t, b1.URL("/s"), "")
	c.syncLive(publish)
	publish(seq("m", 1, 5)...)
	c.expectData(seq("m", 1, 5)...)
	id := c.lastEventID()
	c.close()
	publish(seq("m", 6, 10)...) // while the client is away

	byHeader := connect(t, b1.URL("/s"), id)
	byQuery := connect(t, b1.URL("/s?lastEventId="+url.QueryEscape(id)), "")
	other := connect(t, b2.URL("/s"), id)
	resumed := []*sseClient{byHeader, byQuery, other}
	for _, c := range resumed {
		c.expectData(seq("m", 6, 10)...)
	}
	publish(seq("m", 11, 15)...)
	publish("end")
	for _, c := range resumed {
		c.expectData(seq("m", 11, 15)...)
		c.expectData("end") // and nothing else
	}

	// A bridge restart: messages published while no bridge runs come
	// first to the client that resumes on the new process.
	byHeader.close()
	b1.Signal(syscall.SIGTERM)
	if code := b1.Wait(waitFor); code != 0 {
		t.Fatalf("bridge exited with status %d", code)
	}
	publish(seq("m", 16, 20)...)
	b3 := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	b3.WaitReadyz(200)
	back := connect(t, b3.URL("/s"), id)
	back.expectData(append(append(seq("m", 6, 15), "end"), seq("m", 16, 20)...)...)
	back.expectOnly("end2", publish)
}

// A broker restart mid-stream, with a stream route and an exchange route on
// one bridge: /readyz answers 503 while the broker is away and 200 after;
// the stream's client, connected throughout, and one that comes back with
// its last ID get every message once, in order, with no gap event; the
// exchange's client is told of the loss with a gap event, then gets what
// is published after the restart.
func TestAMQPBrokerRestart(t *testing.T) {
	restart := brokertest.LockRabbitMQ(t, "../../scripts/rabbitmq.sh")
	rb := newRabbit(t)
	stream, ex := rb.stream(nil), rb.exchange()
	pubStream, pubEx := rb.publisher("", stream), rb.publisher(ex, "")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "4",
		"-route", rb.route("/s", "stream="+stream), "-route", rb.route("/x", "exchange="+ex))
	b.WaitReadyz(200)

	stays := connect(t, b.URL("/s"), "")
	stays.syncLive(pubStream)
	leaves := connect(t, b.URL("/s"), stays.lastEventID())
	live := connect(t, b.URL("/x"), "")
	live.syncLive(pubEx)
	pubStream(seq("m", 1, 5)...)
	stays.expectData(seq("m", 1, 5)...)
	leaves.expectData(seq("m", 1, 5)...)
	leaves.close()

	codes := watchReadyz(t, b)
	restart()
	pubStream(seq("m", 6, 10)...) // as soon as the broker takes them
	b.WaitReadyz(200)
	if seen := codes(); !slices.Contains(seen, "503") {
		t.Errorf("/readyz never answered 503 while the broker was down (answers: %v)", seen)
	}

	stays.expectData(seq("m", 6, 10)...)
	back := connect(t, b.URL("/s"), leaves.lastEventID())
	back.expectData(seq("m", 6, 10)...)
	pubStream("end")
	stays.expectData("end")
	back.expectData("end")

	gap := live.next()
	if gap.Type != "gap" {
		t.Fatalf("exchange client after the restart: type %q data %q, want a gap event; received:\n%s", gap.Type, gap.Data, live.body())
	}
	var g struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(gap.Data), &g); err != nil || g.Reason == "" {
		t.Errorf("gap data %q: want JSON with a reason (%v)", gap.Data, err)
	}
	live.syncLive(pubEx)
	pubEx(seq("x", 1, 3)...)
	live.expectData(seq("x", 1, 3)...)
}

// Retention: a client whose ID the stream no longer holds gets a gap event
// that says so, then every message the stream still holds, in order.
func TestAMQPStreamRetention(t *testing.T) {
	rb := newRabbit(t)
	stream := rb.stream(amqp.Table{
		"x-max-length-bytes":              int64(4000),
		"x-stream-max-segment-size-bytes": int64(1000),
	})
	publish := rb.publisher("", stream)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "4", "-route", rb.route("/s", "stream="+stream))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/s"), "")
	c.syncLive(publish)
	publish("m0")
	c.expectData("m0")
	c.close()

	// In batches: a batch is one chunk, and retention deletes whole
	// segments (see source/amqp).
	for i := 1; i <= 400; i += 20 {
		publish(seq("m", i, i+19)...)
	}
	back := connect(t, b.URL("/s"), c.lastEventID())
	gap := back.next()
	var g struct {
		Reason      string `json:"reason"`
		LastEventID string `json:"lastEventId"`
	}
	if err := json.Unmarshal([]byte(gap.Data), &g); gap.Type != "gap" || err != nil || !strings.HasPrefix(g.Reason, "expired") || g.LastEventID != c.lastEventID() {
		t.Fatalf("first event: type %q data %q, want a gap event with reason expired and the client's ID; received:\n%s", gap.Type, gap.Data, back.body())
	}
	first := back.next()
	n, err := strconv.Atoi(strings.TrimPrefix(first.Data, "m"))
	if err != nil || n <= 1 || n > 400 {
		t.Fatalf("after the gap: %q, want a later message", first.Data)
	}
	t.Logf("gap %q; the stream goes on at m%d", g.Reason, n)
	back.expectData(seq("m", n+1, 420)[:400-n]...)
	back.expectOnly("end", publish)
}

// An exchange route on two bridge instances: each instance's clients get
// every message, in order.
func TestAMQPExchangeEveryInstance(t *testing.T) {
	rb := newRabbit(t)
	ex := rb.exchange()
	publish := rb.publisher(ex, "")
	route := rb.route("/x", "exchange="+ex)
	a := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	a.WaitReadyz(200)
	b.WaitReadyz(200)
	clients := []*sseClient{connect(t, a.URL("/x"), ""), connect(t, a.URL("/x"), ""), connect(t, b.URL("/x"), "")}
	// Each client is synced by markers that the others receive too: they
	// all skip to the one published after the last sync.
	for _, c := range clients {
		c.syncLive(publish)
	}
	publish("synced")
	for _, c := range clients {
		for ev := c.next(); ev.Data != "synced"; ev = c.next() {
			if !strings.HasPrefix(ev.Data, "sync-") {
				t.Fatalf("%s: %q while syncing", c.url, ev.Data)
			}
		}
	}
	publish(seq("m", 1, 50)...)
	for _, c := range clients {
		c.expectData(seq("m", 1, 50)...)
	}
}

// 1,000 clients of one stream route and 5,000 messages: every client gets
// every message once, in order (the lean reader of the JetStream load test).
func TestAMQPManyClients(t *testing.T) {
	clients, messages := 1000, 5000
	if testing.Short() {
		clients, messages = 100, 1000
	}
	rb := newRabbit(t)
	stream := rb.stream(nil)
	publish := rb.publisher("", stream)
	b := startBridgeBin(t, plainBinary(t), "-listen", "127.0.0.1:0", "-route", rb.route("/s", "stream="+stream))
	b.WaitReadyz(200)
	probe := connect(t, b.URL("/s"), "")
	probe.syncLive(publish)
	start := probe.lastEventID()
	probe.close()

	manyClients(t, clients, "every message once, in order",
		func(ctx context.Context, hc *http.Client, connected func()) error {
			return readLoad(ctx, hc, b.URL("/s"), start, messages, connected, nil)
		},
		func(context.Context) error {
			for i := 1; i <= messages; i += 500 {
				publish(seq("m", i, min(i+499, messages))...)
			}
			return nil
		})
}
