package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/internal/poll"
)

// A gapData is the data of a gap event.
type gapData struct {
	Reason      string `json:"reason"`
	LastEventID string `json:"lastEventId"`
	Missed      uint64 `json:"missed"`
}

// expectGap checks that the next event is a gap with reason, and returns
// its data.
func (c *sseClient) expectGap(reason string) gapData {
	c.t.Helper()
	ev := c.next()
	var g gapData
	if ev.Type != "gap" || json.Unmarshal([]byte(ev.Data), &g) != nil || g.Reason != reason {
		c.t.Fatalf("%s: got type %q data %q, want a gap %q; received:\n%s", c.url, ev.Type, ev.Data, reason, c.body())
	}
	return g
}

// expectMissing checks, while the stream of the route /s is missing on its
// broker, that /readyz is 503 naming the route, and that the client c
// keeps its stream, with heartbeats, for d; sample, if not nil, is called
// every 500 ms meanwhile.
func expectMissing(t *testing.T, b *proc, c *sseClient, d time.Duration, sample func()) {
	t.Helper()
	b.WaitReadyz(503)
	if _, body, _ := b.Get("/readyz"); !strings.Contains(body, "/s") {
		t.Errorf("/readyz while the stream is missing: %q, want it to name the route", body)
	}
	before := len(c.body())
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(500 * time.Millisecond)
		if sample != nil {
			sample()
		}
	}
	if len(c.body()) == before {
		t.Error("no heartbeat while the stream is missing")
	}
	select {
	case <-c.done:
		t.Fatalf("the stream ended while the broker's stream was missing (%v)", c.err)
	default:
	}
}

// TestJetStreamReset deletes a JetStream stream under a route with a
// client, and creates it again: /readyz is 503 naming the route while the
// stream is missing, with the client still connected; then the client
// gets one gap (stream-reset) and exactly the new stream's messages. A
// client resuming from an ID of the old stream gets the same.
func TestJetStreamReset(t *testing.T) {
	ns := runNATS(t)
	pub, route := ns.jetStream("RESET")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "4", "-heartbeat", "500ms", "-route", "/s="+route)
	b.WaitReadyz(200)
	c := connect(t, b.URL("/s"), "")
	c.syncLive(pub.publish)
	pub.publish(seq("old", 1, 5)...)
	c.expectData(seq("old", 1, 5)...)
	oldID := c.lastEventID()

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := pub.js.DeleteStream(ctx, "RESET"); err != nil {
		t.Fatal(err)
	}
	expectMissing(t, b, c, 1500*time.Millisecond, nil)

	pub, _ = ns.jetStream("RESET")
	pub.publish(seq("new", 1, 10)...)
	c.expectGap("stream-reset")
	c.expectData(seq("new", 1, 10)...)
	b.WaitReadyz(200)

	back := connect(t, b.URL("/s"), oldID)
	back.expectGap("stream-reset")
	back.expectData(seq("new", 1, 10)...)
	back.expectOnly("end", pub.publish)
	c.expectData("end")
}

// TestJetStreamRetentionBehind lets retention delete messages that the
// live reader and a catch-up reader have not read yet: the bridge is
// stopped (SIGSTOP) while the stream moves on and shrinks to its last 100
// messages. Each client then gets every message it can, in order, and a
// gap (expired) whose count is exactly what it missed.
func TestJetStreamRetentionBehind(t *testing.T) {
	ns := runNATS(t)
	pub, route := ns.jetStream("BEHIND")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "64", "-route", "/s="+route)
	b.WaitReadyz(200)
	live := connect(t, b.URL("/s"), "")
	live.syncLive(pub.publish)
	pub.publish(seq("m", 1, 2000)...)
	var ids []string
	for i := 1; i <= 2000; i++ {
		ev := live.expectData("m" + strconv.Itoa(i))
		ids = append(ids, ev.LastEventID)
	}
	// The resuming client's catch-up reader has 1,990 messages to read.
	resumed := connect(t, b.URL("/s"), ids[9])
	b.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			b.Signal(syscall.SIGCONT)
		}
	}()
	pub.publish(seq("m", 2001, 5000)...)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := pub.js.UpdateStream(ctx, jetstream.StreamConfig{Name: "BEHIND", Subjects: []string{"behind.>"}, MaxMsgs: 100}); err != nil {
		t.Fatal(err)
	}
	b.Signal(syscall.SIGCONT)
	stopped = false

	// Messages are m1..m5000 after the sync markers: the stream's sequence
	// of mN is N plus the markers.
	for _, c := range []struct {
		name   string
		client *sseClient
		next   int
	}{{"live", live, 2001}, {"resumed", resumed, 11}} {
		gaps := expectAccounted(t, c.client, c.next, 5000)
		if gaps == 0 {
			t.Errorf("%s client: no gap, though the broker deleted messages it had not received", c.name)
		}
	}
}

// expectAccounted reads c's events until message m<last>, and checks that
// each message comes in order from m<next> and that every one not received
// is counted by a gap (expired) just before the next one received. It
// returns the number of gaps.
func expectAccounted(t *testing.T, c *sseClient, next, last int) (gaps int) {
	t.Helper()
	var missed uint64
	for next <= last {
		ev := c.next()
		if ev.Type == "gap" {
			var g gapData
			if json.Unmarshal([]byte(ev.Data), &g) != nil || g.Reason != "expired" || g.Missed == 0 {
				t.Fatalf("%s: gap %q, want reason expired and a count", c.url, ev.Data)
			}
			gaps++
			missed += g.Missed
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(ev.Data, "m"))
		if ev.Type != "message" || err != nil || uint64(n-next) != missed {
			t.Fatalf("%s: got %s %q after m%d and gaps counting %d missed, want m%d", c.url, ev.Type, ev.Data, next-1, missed, next+int(missed))
		}
		next, missed = n+1, 0
	}
	return gaps
}

// deleteTopic deletes the topic.
func (k *kafkaTopic) deleteTopic() {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res, err := k.client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{k.name}})
	if err == nil {
		err = res.Errors[k.name]
	}
	if err != nil {
		k.t.Fatalf("delete topic %s: %v", k.name, err)
	}
}

// createAgain creates the topic again, once the broker has finished
// deleting it.
func (k *kafkaTopic) createAgain() {
	k.t.Helper()
	poll.UntilNil(k.t, waitFor, "topic "+k.name+" is created again", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := k.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: k.name, NumPartitions: kafkaPartitions, ReplicationFactor: 1,
		}}})
		if err == nil {
			err = res.Errors[k.name]
		}
		return err
	})
}

// sockets returns the number of sockets the process has open.
func (p *proc) sockets() int {
	p.t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", p.Pid())
	fds, err := os.ReadDir(dir)
	if err != nil {
		p.t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// TestKafkaReset deletes the topic of a route with a client, and creates
// it again: /readyz is 503 naming the route while the topic is missing,
// the client is kept with heartbeats, and the bridge neither hammers the
// broker nor leaves a goroutine waiting for the topic; then the client
// gets one gap (stream-reset) and exactly the new topic's messages, and so
// does a client resuming from an ID of the old topic.
func TestKafkaReset(t *testing.T) {
	t.Parallel()
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "4", "-heartbeat", "500ms",
		"-route", top.route("/s", "start=earliest&metadata_interval=1s"))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/s"), "")
	top.produceTo(0, "k", seq("old", 1, 5)...)
	c.expectData(seq("old", 1, 5)...)
	oldID := c.lastEventID()

	top.deleteTopic()
	// Five seconds without the topic: the bridge tries again with
	// backoff (from 100 ms, doubling: 6 tries at most), and holds few
	// sockets.
	const retrying = "source unavailable; retrying"
	tries, most := strings.Count(b.Output(), retrying), 0
	expectMissing(t, b, c, 5*time.Second, func() { most = max(most, b.sockets()) })
	tries = strings.Count(b.Output(), retrying) - tries
	if tries > 7 {
		t.Errorf("the bridge tried %d times in 5 s without the topic, want a few (backoff)", tries)
	}
	if most > 20 {
		t.Errorf("%d sockets open while the topic is missing", most)
	}
	t.Logf("5 s without the topic: at most %d sockets, %d tries", most, tries)

	top.createAgain()
	top.produceTo(0, "k", seq("new", 1, 10)...)
	c.expectGap("stream-reset")
	c.expectData(seq("new", 1, 10)...)
	b.WaitReadyz(200)

	back := connect(t, b.URL("/s"), oldID)
	back.expectGap("stream-reset")
	back.expectData(seq("new", 1, 10)...)
	top.produceTo(0, "k", "end")
	back.expectData("end")
	c.expectData("end")
}

// TestKafkaTopicDeleted deletes the topic of a route with clients and
// dumps esbridge's goroutines (SIGQUIT) a few seconds later: none waits
// in kafka-go's look-up of the topic's leaders.
func TestKafkaTopicDeleted(t *testing.T) {
	t.Parallel()
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", top.route("/s", "start=earliest&metadata_interval=1s"))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/s"), "")
	top.produceTo(0, "k", seq("m", 1, 3)...)
	c.expectData(seq("m", 1, 3)...)
	top.deleteTopic()
	b.WaitReadyz(503)
	time.Sleep(3 * time.Second)
	b.Signal(syscall.SIGQUIT)
	b.Wait(waitFor)
	dump := b.Output()
	if !strings.Contains(dump, "goroutine ") {
		t.Fatalf("no goroutine dump:\n%s", dump)
	}
	if n := strings.Count(dump, "LookupPartition"); n > 0 {
		t.Errorf("%d frames in kafka-go's LookupPartition after the topic was deleted", n)
	}
}

// TestAMQPStreamReset deletes the RabbitMQ stream of a route with a
// client, and declares it again: /readyz is 503 naming the route while
// the stream is missing, then the client gets one gap (stream-reset) and
// exactly the new stream's messages. RabbitMQ tells no incarnation: a
// client resuming from an ID of the old stream beyond the new one's head
// gets a gap (ahead), then the live stream.
func TestAMQPStreamReset(t *testing.T) {
	rb := newRabbit(t)
	stream := rb.stream(nil)
	publish := rb.publisher("", stream)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "4", "-heartbeat", "500ms", "-route", rb.route("/s", "stream="+stream))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/s"), "")
	c.syncLive(publish)
	publish(seq("old", 1, 20)...)
	c.expectData(seq("old", 1, 20)...)
	oldID := c.lastEventID()

	rb.do("delete stream", func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(stream, false, false, false)
		return err
	})
	expectMissing(t, b, c, 1500*time.Millisecond, nil)

	rb.do("declare stream", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(stream, true, false, false, false, amqp.Table{"x-queue-type": "stream"})
		return err
	})
	publish(seq("new", 1, 10)...)
	c.expectGap("stream-reset")
	c.expectData(seq("new", 1, 10)...)
	b.WaitReadyz(200)

	back := connect(t, b.URL("/s"), oldID)
	back.expectGap("ahead")
	back.expectOnly("end", publish)
	c.expectData("end")
}
