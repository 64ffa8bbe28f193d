package main

// Program tests of RabbitMQ routes, against a real broker: AMQP_URL, or
// the one scripts/rabbitmq.sh starts on 127.0.0.1:5672 (`make test` does).
// Without one they are skipped, or fail when CI is set.

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esbridge/esbridge/internal/brokertest"
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
	deadline := time.Now().Add(waitFor)
	for {
		err := f(r.ch)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
		r.connect()
	}
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
	b1.waitReadyz(200)
	b2.waitReadyz(200)

	c := connect(t, b1.url("/s"), "")
	c.syncLive(publish)
	publish(seq("m", 1, 5)...)
	c.expectData(seq("m", 1, 5)...)
	id := c.lastEventID()
	c.close()
	publish(seq("m", 6, 10)...) // while the client is away

	byHeader := connect(t, b1.url("/s"), id)
	byQuery := connect(t, b1.url("/s?lastEventId="+url.QueryEscape(id)), "")
	other := connect(t, b2.url("/s"), id)
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
	b1.signal(syscall.SIGTERM)
	if code := b1.wait(waitFor); code != 0 {
		t.Fatalf("bridge exited with status %d", code)
	}
	publish(seq("m", 16, 20)...)
	b3 := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	b3.waitReadyz(200)
	back := connect(t, b3.url("/s"), id)
	back.expectData(append(append(seq("m", 6, 15), "end"), seq("m", 16, 20)...)...)
	back.expectOnly("end2", publish)
}
