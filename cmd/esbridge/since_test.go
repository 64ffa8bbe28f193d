package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// sinceURL returns the URL of path on b with since=t.
func sinceURL(b *proc, path, since string) string {
	return b.URL(path + "?since=" + url.QueryEscape(since))
}

// A client with ?since= receives the JetStream stream from the first
// message stored at or after that time, from the broker (the backlog
// holds 3 events), then live; Last-Event-ID wins over since; a route
// without max_since and start=latest refuses since with a gap, then the
// live stream; a time to come starts live; a malformed since is a 400.
func TestSinceJetStream(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "3",
		"-route", "/orders="+stream+"?max_since=1h",
		"-route", "/latest="+stream)
	b.WaitReadyz(200)

	pub.publish(seq("m", 1, 3)...)
	since := time.Now() // after m3 was stored, before m4
	pub.publish(seq("m", 4, 10)...)

	fromM4 := connect(t, sinceURL(b, "/orders", since.Format(time.RFC3339Nano)), "")
	fromM4.expectData(seq("m", 4, 10)...)
	m6 := connect(t, sinceURL(b, "/orders", since.Format(time.RFC3339Nano)), "").expectData(seq("m", 4, 6)...)
	resumed := connect(t, sinceURL(b, "/orders", strconv.FormatInt(since.Add(-time.Minute).UnixMilli(), 10)), m6.LastEventID)
	resumed.expectData(seq("m", 7, 10)...)
	refused := connect(t, sinceURL(b, "/latest", since.Format(time.RFC3339Nano)), "")
	refused.expectGap("since-refused")
	capped := connect(t, sinceURL(b, "/orders", since.Add(-2*time.Hour).Format(time.RFC3339)), "")
	capped.expectGap("since-refused")
	future := connect(t, sinceURL(b, "/orders", since.Add(time.Hour).Format(time.RFC3339)), "")

	pub.publish("m11")
	for _, c := range []*sseClient{fromM4, resumed, refused, capped, future} {
		c.expectData("m11")
	}

	for _, bad := range []string{"yesterday", "1714564800.5", "0000-01-01T00:00:00Z"} {
		if status, _, _ := b.Get("/orders?since=" + url.QueryEscape(bad)); status != http.StatusBadRequest {
			t.Errorf("since=%q: status %d, want 400", bad, status)
		}
	}
}

// A client with ?since= receives the Kafka topic from the first message
// of each partition whose timestamp is at or after that time, then live;
// a time before the oldest message gives the whole topic.
func TestSinceKafka(t *testing.T) {
	t.Parallel()
	k := newKafkaTopic(t)
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	records := make([]kafka.Record, 10)
	for i := range records {
		records[i] = kafka.Record{Key: kafka.NewBytes([]byte("k")), Value: kafka.NewBytes(fmt.Appendf(nil, "m%d", i)), Time: base.Add(time.Duration(i) * time.Second)}
	}
	if err := k.produceRecords(0, records); err != nil {
		t.Fatal(err)
	}
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "2", "-route", k.route("/t", "start=earliest"))
	b.WaitReadyz(200)

	at4 := connect(t, sinceURL(b, "/t", base.Add(4*time.Second).Format(time.RFC3339Nano)), "")
	at4.expectData(seq("m", 4, 9)...)
	between := connect(t, sinceURL(b, "/t", strconv.FormatInt(base.Add(6500*time.Millisecond).UnixMilli(), 10)), "")
	between.expectData(seq("m", 7, 9)...)
	all := connect(t, sinceURL(b, "/t", base.Add(-time.Hour).Format(time.RFC3339)), "")
	all.expectData(seq("m", 0, 9)...)
	future := connect(t, sinceURL(b, "/t", time.Now().Add(time.Hour).Format(time.RFC3339)), "")

	k.produceTo(0, "", "m10")
	for _, c := range []*sseClient{at4, between, all, future} {
		c.expectData("m10")
	}
}

// On core NATS, which keeps no history, a client with ?since= gets a gap
// that says so, then the live stream.
func TestSinceCoreNATS(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	nc := ns.conn()
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/ticks=nats://"+ns.Addr()+"/ticks")
	b.WaitReadyz(200)
	c := connect(t, sinceURL(b, "/ticks", "0"), "")
	c.expectGap("no-history")
	c.syncLive(func(payloads ...string) {
		for _, p := range payloads {
			if err := nc.Publish("ticks", []byte(p)); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A client with ?since= and a filter receives, from the broker, the
// filter's messages stored at or after that time, and then the filter's
// live ones: the two views compose.
func TestSinceWithFilter(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	pa := &publisher{t: t, js: pub.js, subject: "orders.a"}
	pb := &publisher{t: t, js: pub.js, subject: "orders.b"}
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "2", "-route", "/orders="+stream+"?max_since=1h")
	b.WaitReadyz(200)

	pa.publish("a1")
	pb.publish("b1")
	since := time.Now()
	for i := 2; i <= 6; i++ {
		pa.publish("a" + strconv.Itoa(i))
		pb.publish("b" + strconv.Itoa(i))
	}
	c := connect(t, sinceURL(b, "/orders", since.Format(time.RFC3339Nano))+"&subject=orders.a", "")
	c.expectData(seq("a", 2, 6)...)
	pb.publish("b7")
	pa.publish("a7")
	c.expectData("a7")
}

// A client with ?since= on a RabbitMQ stream route receives the messages
// stored from that time on (RabbitMQ's timestamp offsets are whole
// seconds: the old messages here are 1.5 s older), then live.
func TestSinceRabbitMQ(t *testing.T) {
	rb := newRabbit(t)
	stream := rb.stream(nil)
	publish := rb.publisher("", stream)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "2", "-route", rb.route("/s", "stream="+stream+"&max_since=1h"))
	b.WaitReadyz(200)
	publish(seq("old", 1, 3)...)
	time.Sleep(1500 * time.Millisecond)
	since := time.Now()
	publish(seq("new", 1, 5)...)
	c := connect(t, sinceURL(b, "/s", since.Format(time.RFC3339Nano)), "")
	c.expectData(seq("new", 1, 5)...)
	c.expectOnly("end", publish)
}
