package main

// Program-level tests of kafka:// routes against a real Kafka broker
// (scripts/kafka.sh start runs one on 127.0.0.1:9092; KAFKA_BROKERS names
// another cluster). Each test has a topic of its own, of 6 partitions,
// holding keyed messages "k<key>-<n>": key k goes to partition k%6, so a
// key's order is its partition's, which the bridge keeps.

import (
	"bytes"
	"context"
	"encoding/base64"
	binenc "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/ssetest"
)

// kafkaPartitions is the number of partitions of every test topic.
const kafkaPartitions = 6

// A kafkaTopic is a topic of the test's own on the test broker.
type kafkaTopic struct {
	t       *testing.T
	brokers []string
	client  *kafka.Client
	name    string
}

var topicNameRE = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// newKafkaTopic creates a topic of 6 partitions with the given configs,
// named after the test, and deletes it at cleanup.
func newKafkaTopic(t *testing.T, configs ...kafka.ConfigEntry) *kafkaTopic {
	t.Helper()
	brokers := brokertest.Kafka(t)
	// A transport of its own, whose metadata is never more than a second
	// old: partitions added by a test are soon known to it.
	tr := &kafka.Transport{MetadataTTL: time.Second}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	name := fmt.Sprintf("esbridge-cmd-%s-%d", topicNameRE.ReplaceAllString(t.Name(), "_"), time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: kafkaPartitions, ReplicationFactor: 1, ConfigEntries: configs,
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
	return &kafkaTopic{t: t, brokers: brokers, client: client, name: name}
}

// route returns the -route flag value serving the topic at path, with the
// query (e.g. "metadata_interval=1s") if not empty.
func (k *kafkaTopic) route(path, query string) string {
	r := path + "=kafka://" + strings.Join(k.brokers, ",") + "/" + k.name
	if query != "" {
		r += "?" + query
	}
	return r
}

// produceTo writes values, keyed by key, to partition p.
func (k *kafkaTopic) produceTo(p int, key string, values ...string) {
	k.t.Helper()
	records := make([]kafka.Record, len(values))
	for i, v := range values {
		records[i] = kafka.Record{Key: kafka.NewBytes([]byte(key)), Value: kafka.NewBytes([]byte(v))}
	}
	if err := k.produceRecords(p, records); err != nil {
		k.t.Fatal(err)
	}
}

// produce writes "k<key>-<n>" for n in from..to, for every key 0..keys-1,
// to partition key%6.
func (k *kafkaTopic) produce(keys, from, to int) {
	k.t.Helper()
	k.producePadded(keys, from, to, "")
}

// producePadded is produce with pad after each message's "k<key>-<n>".
func (k *kafkaTopic) producePadded(keys, from, to int, pad string) {
	k.t.Helper()
	byPartition := make([][]kafka.Record, kafkaPartitions)
	for n := from; n <= to; n++ {
		for key := range keys {
			p := key % kafkaPartitions
			byPartition[p] = append(byPartition[p], kafka.Record{
				Key: kafka.NewBytes(fmt.Appendf(nil, "k%d", key)), Value: kafka.NewBytes(fmt.Appendf(nil, "k%d-%d%s", key, n, pad)),
			})
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, kafkaPartitions)
	for p, records := range byPartition {
		if len(records) == 0 {
			continue
		}
		wg.Go(func() { errs[p] = k.produceRecords(p, records) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		k.t.Fatal(err)
	}
}

// produceRecords writes records to partition p, retrying for a while
// (while the broker restarts, or before it knows a new partition). A
// retry after an error may duplicate records in Kafka: callers produce
// while the broker is up.
func (k *kafkaTopic) produceRecords(p int, records []kafka.Record) error {
	type kv struct {
		key, value []byte
		time       time.Time
	}
	data := make([]kv, len(records))
	for i, r := range records {
		key, _ := io.ReadAll(r.Key)
		value, _ := io.ReadAll(r.Value)
		data[i] = kv{key, value, r.Time}
	}
	var err error
	if poll.Wait(30*time.Second, func() bool {
		rs := make([]kafka.Record, len(data))
		for i, d := range data {
			rs[i] = kafka.Record{Key: kafka.NewBytes(d.key), Value: kafka.NewBytes(d.value), Time: d.time}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var res *kafka.ProduceResponse
		res, err = k.client.Produce(ctx, &kafka.ProduceRequest{
			Topic: k.name, Partition: p, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(rs...),
		})
		if err == nil {
			err = res.Error
		}
		return err == nil
	}) {
		return nil
	}
	return fmt.Errorf("produce to %s/%d: %w", k.name, p, err)
}

// offsets returns the first and the next offset of each of the topic's
// first n partitions.
func (k *kafkaTopic) offsets(n int) (first, end []int64) {
	k.t.Helper()
	var reqs []kafka.OffsetRequest
	for p := range n {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res, err := k.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{k.name: reqs}})
	if err != nil {
		k.t.Fatalf("list offsets: %v", err)
	}
	first, end = make([]int64, n), make([]int64, n)
	got := 0
	for _, po := range res.Topics[k.name] {
		if po.Error != nil {
			k.t.Fatalf("list offsets of partition %d: %v", po.Partition, po.Error)
		}
		first[po.Partition], end[po.Partition] = po.FirstOffset, po.LastOffset
		got++
	}
	if got != n {
		k.t.Fatalf("list offsets: %d partitions, want %d", got, n)
	}
	return first, end
}

// keyed follows one client's messages "k<key>-<n>": each key's must come
// in order, each once.
type keyed struct {
	t        *testing.T
	next     map[string]int // key -> the n expected next
	anyStart bool           // a key not in next may start at any n
	envelope bool           // the data is a JSON envelope
	last     string         // the ID of the last message taken
	// firstOffset is the offset of the first message taken from each
	// partition, with envelopes.
	firstOffset map[int]uint64
	// held is the offset after the last message taken from each
	// partition.
	held map[int]uint64
	// noIDCheck turns checkID off.
	noIDCheck bool
	// events are the messages taken.
	events []ssetest.Event
	// badIDs are the indexes in events of those whose ID idProblem
	// faulted, with noIDCheck.
	badIDs []int
}

// newKeyed expects every key 0..keys-1 to go on at n = from.
func newKeyed(t *testing.T, keys, from int) *keyed {
	k := &keyed{t: t, next: map[string]int{}}
	for key := range keys {
		k.next["k"+strconv.Itoa(key)] = from
	}
	return k
}

// clone returns a copy of k, for another client that resumes where k's
// client was.
func (k *keyed) clone() *keyed {
	c := *k
	c.next = maps.Clone(k.next)
	c.held = maps.Clone(k.held)
	c.firstOffset = maps.Clone(k.firstOffset)
	c.events, c.badIDs = nil, nil
	return &c
}

// read takes n messages from c, checking each key's order.
func (k *keyed) read(c *sseClient, n int) {
	k.t.Helper()
	for i := range n {
		ev := c.next()
		data := ev.Data
		partition, offset := -1, uint64(0)
		if ev.Type == "message" && k.envelope {
			var env struct {
				Partition *int    `json:"partition"`
				Offset    *uint64 `json:"offset"`
				Data      *string `json:"data"`
			}
			if err := json.Unmarshal([]byte(ev.Data), &env); err != nil || env.Partition == nil || env.Offset == nil || env.Data == nil {
				k.t.Fatalf("%s: message %q is not an envelope with partition, offset and data (%v)", c.url, ev.Data, err)
			}
			if k.firstOffset == nil {
				k.firstOffset = map[int]uint64{}
			}
			if _, ok := k.firstOffset[*env.Partition]; !ok {
				k.firstOffset[*env.Partition] = *env.Offset
			}
			data = *env.Data
			partition, offset = *env.Partition, *env.Offset
		}
		key, num, ok := strings.Cut(data, "-")
		got, err := strconv.Atoi(num)
		if ev.Type != "message" || !ok || err != nil {
			k.t.Fatalf("%s: message %d of %d: type %q data %q, want a message k<key>-<n>; received:\n%s", c.url, i+1, n, ev.Type, ev.Data, tail(c.body()))
		}
		want, known := k.next[key]
		if !known && k.anyStart {
			want = got
		}
		if !known && !k.anyStart || got != want {
			k.t.Fatalf("%s: message %d of %d: %s, want %s-%d (a gap, a duplicate or a stranger); received:\n%s", c.url, i+1, n, data, key, want, tail(c.body()))
		}
		k.next[key] = got + 1
		k.last = ev.LastEventID
		if partition < 0 {
			partition, offset = offsetOf(key, got)
		}
		if !k.noIDCheck {
			k.checkID(c, ev, partition, offset)
		} else if problem := k.idProblem(ev, partition, offset); problem != "" {
			k.badIDs = append(k.badIDs, len(k.events))
			k.t.Logf("%s: %s", c.url, problem)
		}
		k.events = append(k.events, ev)
	}
}

// offsetOf returns where produce and produceTo put k<key>-<n>, on a topic
// of 12 keys that they alone wrote from n = 1 on: key k goes to partition
// k%6, where keys k and k+6 alternate; knew-<n> is the n-th message of
// partition 6.
func offsetOf(key string, n int) (int, uint64) {
	if key == "knew" {
		return kafkaPartitions, uint64(n - 1)
	}
	k, _ := strconv.Atoi(strings.TrimPrefix(key, "k"))
	return k % kafkaPartitions, uint64(2*(n-1) + k/kafkaPartitions)
}

// checkID checks that the ID of ev, a message at offset of partition,
// holds for each partition the client has received messages from the
// offset after the last of them: what a client resuming with that ID
// would be sent next. An ID behind the client makes a resume send
// duplicates; one ahead, skip messages.
func (k *keyed) checkID(c *sseClient, ev ssetest.Event, partition int, offset uint64) {
	k.t.Helper()
	if problem := k.idProblem(ev, partition, offset); problem != "" {
		k.t.Fatalf("%s: %s; received:\n%s", c.url, problem, tail(c.body()))
	}
}

// idProblem records that the client has ev, at offset of partition, and
// returns what is wrong with its ID, if anything (see checkID).
func (k *keyed) idProblem(ev ssetest.Event, partition int, offset uint64) string {
	if k.held == nil {
		k.held = map[int]uint64{}
	}
	k.held[partition] = offset + 1
	pos, evPartition, ok := decodeID(ev.LastEventID)
	if !ok || evPartition != partition {
		return fmt.Sprintf("message %q of partition %d has the ID %s", ev.Data, partition, describeID(ev.LastEventID))
	}
	for _, p := range slices.Sorted(maps.Keys(k.held)) {
		held := k.held[p]
		if p >= len(pos) || pos[p] != held {
			return fmt.Sprintf("message %q has the ID %s, but the client has partition %d up to offset %d: a resume from that ID would not go on at %d",
				ev.Data, describeID(ev.LastEventID), p, held-1, held)
		}
	}
	return ""
}

// warmUp produces k<key>-1 of 12 keys, fewer than a log of 16 events
// holds, and reads them from c, a fresh client: then c has an ID, and is
// replayed from the broker, not sent a "slow" gap, if it falls behind the
// log (see TestKafkaFreshClientFallsBehind).
func (k *kafkaTopic) warmUp(c *sseClient, kd *keyed) {
	k.t.Helper()
	k.produce(len(kd.next), 1, 1)
	kd.readUntil(c, 1)
}

// readUntil takes every key's messages up to n = to, and checks that each
// key's last was to: exactly the messages from next to to, in each key's
// order.
func (k *keyed) readUntil(c *sseClient, to int) {
	k.t.Helper()
	n := 0
	for _, next := range k.next {
		n += to + 1 - next
	}
	k.read(c, n)
	for key, next := range k.next {
		if next != to+1 {
			k.t.Fatalf("%s: %s went on to %d, want %d", c.url, key, next-1, to)
		}
	}
}

// decodeID decodes the ID of an event of a Kafka route: the next offset of
// each partition after the event, and the event's partition.
func decodeID(id string) (pos []uint64, partition int, ok bool) {
	// Version 2, kind event; then the stream's 4 bytes and the topic's
	// incarnation's 2.
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) < 7 || b[0] != 2<<4|3 {
		return nil, 0, false
	}
	r := bytes.NewReader(b[7:])
	p, err1 := binenc.ReadUvarint(r)
	n, err2 := binenc.ReadUvarint(r)
	if err1 != nil || err2 != nil || n > uint64(len(b)) {
		return nil, 0, false
	}
	for i := range n {
		if i == 0 {
			o, err := binenc.ReadUvarint(r)
			if err != nil {
				return nil, 0, false
			}
			pos = append(pos, o)
		} else {
			d, err := binenc.ReadVarint(r)
			if err != nil {
				return nil, 0, false
			}
			pos = append(pos, pos[i-1]+uint64(d))
		}
	}
	return pos, int(p), r.Len() == 0
}

// describeID decodes an event ID of a Kafka route, for messages: the
// event's partition and the next offset of each partition.
func describeID(id string) string {
	if pos, p, ok := decodeID(id); ok {
		return fmt.Sprintf("%q (partition %d, next offsets %v)", id, p, pos)
	}
	return fmt.Sprintf("%q (not a Kafka event ID)", id)
}

// tail returns the end of a long stream body, for messages.
func tail(s string) string {
	const max = 4000
	if len(s) > max {
		return "...\n" + s[len(s)-max:]
	}
	return s
}

// Every message of a topic reaches connected clients, each key's in order.
func TestKafkaLive(t *testing.T) {
	t.Parallel()
	const keys = 12
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", top.route("/t", ""))
	b.WaitReadyz(200)
	c1 := connect(t, b.URL("/t"), "")
	c2 := connect(t, b.URL("/t"), "")
	top.produce(keys, 1, 50) // 600 messages
	k1, k2 := newKeyed(t, keys, 1), newKeyed(t, keys, 1)
	k1.readUntil(c1, 50)
	k2.readUntil(c2, 50)
	top.produce(keys, 51, 51)
	k1.readUntil(c1, 51)
	k2.readUntil(c2, 51)
}

// A client that disconnects and comes back with its last ID, which has
// left the bridge's log of 16 events, is replayed from the broker: exactly
// the messages it had not received, those produced while it was away
// included, then the live stream.
func TestKafkaResumeAfterDisconnect(t *testing.T) {
	t.Parallel()
	const keys = 12
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "16", "-route", top.route("/t", ""))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/t"), "")
	k := newKeyed(t, keys, 1)
	top.warmUp(c, k)
	top.produce(keys, 2, 25) // 288 messages more

	k.read(c, 100)
	c.close()
	top.produce(keys, 26, 30) // while the client is away

	byHeader := connect(t, b.URL("/t"), k.last)
	byQuery := connect(t, b.URL("/t?lastEventId="+url.QueryEscape(k.last)), "")
	kh, kq := k.clone(), k.clone()
	kh.readUntil(byHeader, 30)
	kq.readUntil(byQuery, 30)
	top.produce(keys, 31, 31)
	kh.readUntil(byHeader, 31)
	kq.readUntil(byQuery, 31)
}

// Every ID a client got resumes it with exactly the messages that
// followed, also when the client was itself resumed from the broker and
// handed over to the bridge's live log, which reads the partitions in
// another order: a resume must not send again what the client had (the
// IDs are not checked as they come, as in the other tests, but used).
func TestKafkaResumeFromEveryID(t *testing.T) {
	t.Parallel()
	const keys = 12
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "16", "-route", top.route("/t", ""))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/t"), "")
	k := newKeyed(t, keys, 1)
	k.noIDCheck = true
	top.warmUp(c, k)
	top.produce(keys, 2, 25)

	k.read(c, 50)
	c.close()
	top.produce(keys, 26, 30)
	// r is replayed from the broker, then joins the live log.
	r := connect(t, b.URL("/t"), k.last)
	kr := k.clone()
	kr.readUntil(r, 30)
	evs := kr.events
	// Resume from the IDs found wrong, and from a few others.
	tries := kr.badIDs[:min(len(kr.badIDs), 3)]
	for i := 0; i < len(evs); i += 50 {
		tries = append(tries, i)
	}
	for _, i := range tries {
		rest := map[string]bool{}
		for _, ev := range evs[i+1:] {
			rest[ev.Data] = true
		}
		c := connect(t, b.URL("/t"), evs[i].LastEventID)
		got := map[string]bool{}
		for range len(rest) {
			ev := c.next()
			if !rest[ev.Data] || got[ev.Data] {
				t.Errorf("resumed from the ID of event %d of %d (%q, %s): got %q, which the client had already (want exactly the %d events after it)",
					i+1, len(evs), evs[i].Data, describeID(evs[i].LastEventID), ev.Data, len(rest))
				break
			}
			got[ev.Data] = true
		}
		c.close()
	}
}

// The ID a client got from one bridge process resumes it on another
// instance running at the same time, and on the same instance after it was
// stopped and started again, from the broker (logs of 16 events).
func TestKafkaResumeAcrossInstancesAndRestart(t *testing.T) {
	t.Parallel()
	const keys = 12
	top := newKafkaTopic(t)
	route := top.route("/t", "")
	a := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "16", "-route", route)
	other := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "16", "-route", route)
	a.WaitReadyz(200)
	other.WaitReadyz(200)

	c := connect(t, a.URL("/t"), "")
	k := newKeyed(t, keys, 1)
	top.warmUp(c, k)
	top.produce(keys, 2, 25)

	k.read(c, 100)
	id := k.last

	a.Signal(syscall.SIGTERM)
	c.expectEnd()
	if code := a.Wait(waitFor); code != 0 {
		t.Fatalf("bridge exited with status %d after SIGTERM", code)
	}
	top.produce(keys, 26, 30) // one bridge is down

	onOther := connect(t, other.URL("/t"), id)
	ko := k.clone()
	ko.readUntil(onOther, 30)

	again := startBridge(t, "-listen", "127.0.0.1:"+a.Port(), "-backlog", "16", "-route", route)
	again.WaitReadyz(200)
	onAgain := connect(t, again.URL("/t"), id)
	ka := k.clone()
	ka.readUntil(onAgain, 30)

	// Back from the other instance, with its newest ID.
	back := connect(t, again.URL("/t"), ko.last)
	kb := ko.clone()
	top.produce(keys, 31, 32)
	ko.readUntil(onOther, 32)
	ka.readUntil(onAgain, 32)
	kb.readUntil(back, 32)
}

// A broker restart mid-stream: /readyz answers 503 while the broker is
// down and 200 after; a client that stayed connected, and one that comes
// back with its last ID, get every message once, in each key's order, and
// no gap event. It restarts the broker of scripts/kafka.sh, which it
// takes for itself (see brokertest.LockKafka), so it does not run in
// parallel; it skips against KAFKA_BROKERS.
func TestKafkaBrokerRestart(t *testing.T) {
	restart := brokertest.LockKafka(t, "../../scripts/kafka.sh")
	const keys = 12
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "16", "-route", top.route("/t", "metadata_interval=1s"))
	b.WaitReadyz(200)

	stays := connect(t, b.URL("/t"), "")
	leaves := connect(t, b.URL("/t"), "")
	ks, kl := newKeyed(t, keys, 1), newKeyed(t, keys, 1)
	top.warmUp(stays, ks)
	kl.readUntil(leaves, 1)
	top.produce(keys, 2, 10)

	ks.readUntil(stays, 10)
	kl.readUntil(leaves, 10)
	leaves.close()

	// Restart, watching /readyz meanwhile.
	codes := watchReadyz(t, b)
	began := time.Now()
	restart()
	seen := codes()
	t.Logf("broker restarted in %v; /readyz meanwhile: %v", time.Since(began), seen)
	if !slices.Contains(seen, "503") {
		t.Errorf("/readyz never answered 503 while the broker was down (answers: %v)", seen)
	}
	b.WaitReadyz(200)

	top.produce(keys, 11, 20)
	ks.readUntil(stays, 20)
	t.Logf("resuming with %s", describeID(kl.last))
	back := connect(t, b.URL("/t"), kl.last)
	kl.readUntil(back, 20)
	top.produce(keys, 21, 21)
	ks.readUntil(stays, 21)
	kl.readUntil(back, 21)
}

// A client that resumes with an ID whose offsets retention has deleted
// gets 200, a gap event whose reason starts with "expired", then the
// earliest messages the broker still holds, and the live stream.
func TestKafkaRetentionGap(t *testing.T) {
	t.Parallel()
	const keys = 12
	// Segments roll at the first append 100 ms after they began, and are
	// deleted a second after their newest message, at the broker's
	// retention check (each second with scripts/kafka.sh).
	top := newKafkaTopic(t,
		kafka.ConfigEntry{ConfigName: "retention.ms", ConfigValue: "1000"},
		kafka.ConfigEntry{ConfigName: "segment.ms", ConfigValue: "100"},
		kafka.ConfigEntry{ConfigName: "file.delete.delay.ms", ConfigValue: "0"},
	)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "16", "-route", top.route("/t", "format=envelope"))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/t"), "")
	top.produce(keys, 1, 1)
	k := newKeyed(t, keys, 1)
	k.envelope = true
	k.read(c, 1)
	oldID := k.last // after k0-1 only
	k.readUntil(c, 1)
	// A batch at a time, fewer than the log holds: c must not fall behind
	// it (and be replayed from a broker that deletes as it goes).
	for n := 2; n <= 5; n++ {
		top.produce(keys, n, n)
		k.readUntil(c, n)
	}
	c.close()
	_, end1 := top.offsets(kafkaPartitions)

	// Produce a batch every 300 ms (each rolls a segment) until every
	// partition has lost the first batch.
	n := 5
	deadline := time.Now().Add(60 * time.Second)
	for {
		first, _ := top.offsets(kafkaPartitions)
		gone := true
		for p := range first {
			gone = gone && first[p] >= end1[p]
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retention did not delete the first messages in 60 s: first offsets %v, want at least %v", first, end1)
		}
		n++
		top.produce(keys, n, n)
		time.Sleep(300 * time.Millisecond)
	}
	// Keep what is left from now on, so that what the broker holds is
	// known.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	res, err := top.client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: top.name,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{
				Name: "retention.ms", Value: "-1", ConfigOperation: kafka.ConfigOperationSet,
			}},
		}},
	})
	cancel()
	if err == nil {
		for _, r := range res.Resources {
			err = errors.Join(err, r.Error)
		}
	}
	if err != nil {
		t.Fatalf("alter retention.ms: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // a retention check in flight
	first, _ := top.offsets(kafkaPartitions)
	n++
	top.produce(keys, n, n)
	if f, _ := top.offsets(kafkaPartitions); fmt.Sprint(f) != fmt.Sprint(first) {
		t.Fatalf("first offsets moved from %v to %v after retention was turned off", first, f)
	}
	_, end := top.offsets(kafkaPartitions)
	t.Logf("produced up to n=%d; the broker holds offsets %v to %v", n, first, end)

	r := connect(t, b.URL("/t"), oldID)
	gap := r.next()
	var g struct {
		Reason string `json:"reason"`
	}
	if gap.Type != "gap" || json.Unmarshal([]byte(gap.Data), &g) != nil || !strings.HasPrefix(g.Reason, "expired") {
		t.Fatalf("first event: type %q data %q, want a gap event whose reason starts with \"expired\"; received:\n%s", gap.Type, gap.Data, tail(r.body()))
	}
	kr := &keyed{t: t, next: map[string]int{}, anyStart: true, envelope: true}
	held := 0
	for p := range end {
		held += int(end[p] - first[p])
	}
	kr.read(r, held)
	for key, next := range kr.next {
		if next != n+1 {
			t.Errorf("%s went on to %d, want %d", key, next-1, n)
		}
	}
	if len(kr.next) != keys {
		t.Errorf("messages of %d keys after the gap, want %d", len(kr.next), keys)
	}
	for p := range first {
		if got, ok := kr.firstOffset[p]; !ok || got != uint64(first[p]) {
			t.Errorf("partition %d: first message after the gap at offset %d (%v), want the earliest held, %d", p, got, ok, first[p])
		}
	}
	top.produce(keys, n+1, n+1)
	kr.anyStart = false
	kr.readUntil(r, n+1)
}

// A partition added to the topic at runtime is found by the metadata poll
// (metadata_interval=1s): its messages reach a connected client, and a
// client that resumes with an ID from before the partition existed.
func TestKafkaPartitionAdded(t *testing.T) {
	t.Parallel()
	const keys = 12
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", top.route("/t", "metadata_interval=1s"))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/t"), "")
	top.produce(keys, 1, 5)
	k := newKeyed(t, keys, 1)
	k.readUntil(c, 5)
	before := k.last

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	res, err := top.client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: top.name, Count: kafkaPartitions + 1}},
	})
	cancel()
	if err == nil {
		err = res.Errors[top.name]
	}
	if err != nil {
		t.Fatalf("create partitions: %v", err)
	}
	top.produceTo(kafkaPartitions, "knew", seq("knew-", 1, 5)...)
	k.next["knew"] = 1
	k.read(c, 5)
	if k.next["knew"] != 6 {
		t.Fatalf("knew went on to %d, want 5", k.next["knew"]-1)
	}

	r := connect(t, b.URL("/t"), before)
	kr := newKeyed(t, keys, 6)
	kr.next["knew"] = 1
	kr.read(r, 5)

	top.produce(keys, 6, 7)
	top.produceTo(kafkaPartitions, "knew", seq("knew-", 6, 7)...)
	k.readUntil(c, 7)
	kr.readUntil(r, 7)
}

// A client that connected before any message, and falls behind the
// bridge's log of 16 events before its first event, is replayed from the
// broker like any other: the stream has history, and the bridge knows
// where the client joined (esource's register sets its last ID to the
// event before it, the route's start position). It must get every
// message, not a "slow" gap, which a browser cannot recover from.
func TestKafkaFreshClientFallsBehind(t *testing.T) {
	t.Parallel()
	const keys = 12
	for i := range 3 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			top := newKafkaTopic(t)
			b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "16", "-route", top.route("/t", ""))
			b.WaitReadyz(200)
			c := connect(t, b.URL("/t"), "")
			top.produce(keys, 1, 25) // 300 messages at once
			k := newKeyed(t, keys, 1)
			k.noIDCheck = true // see TestKafkaResumeFromEveryID
			k.readUntil(c, 25)
		})
	}
}

// 1,000 clients of one Kafka route and 5,000 keyed messages: every client
// gets every message once, in each key's order. The bridge keeps its
// default backlog, runs without the race detector, and the clients are
// lean, as in TestManyClientsManyMessages.
func TestKafkaManyClients(t *testing.T) {
	clients, perKey := 1000, 500
	if testing.Short() {
		clients, perKey = 100, 100
	}
	const keys = 10
	top := newKafkaTopic(t)
	b := startBridgeBin(t, plainBinary(t), "-listen", "127.0.0.1:0", "-route", top.route("/t", ""))
	b.WaitReadyz(200)

	manyClients(t, clients, "every message once, in each key's order",
		func(ctx context.Context, hc *http.Client, connected func()) error {
			return readKafkaLoad(ctx, hc, b.URL("/t"), keys, perKey, connected)
		},
		func(context.Context) error {
			top.produce(keys, 1, perKey)
			return nil
		})
}

// readKafkaLoad reads the stream at u until it has k<key>-1 ..
// k<key>-perKey of every key, each key's in order, and reports the first
// departure from that. It calls connected once the response has begun.
func readKafkaLoad(ctx context.Context, hc *http.Client, u string, keys, perKey int, connected func()) error {
	once := sync.OnceFunc(connected)
	defer once()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	once()
	next := make([]int, keys)
	for i := range next {
		next[i] = 1
	}
	remaining := keys * perKey
	buf := make([]byte, 32<<10)
	var carry []byte
	for remaining > 0 {
		n, err := resp.Body.Read(buf)
		data := buf[:n]
		if len(carry) > 0 {
			carry = append(carry, data...)
			data = carry
		}
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			line := data[:i]
			data = data[i+1:]
			switch {
			case bytes.HasPrefix(line, []byte("data: k")):
				key, num, ok := bytes.Cut(line[len("data: k"):], []byte("-"))
				num, _, _ = bytes.Cut(num, []byte(" ")) // the padding
				kk, err1 := strconv.Atoi(string(key))
				v, err2 := strconv.Atoi(string(num))
				if !ok || err1 != nil || err2 != nil || kk < 0 || kk >= keys {
					return fmt.Errorf("got %q", line)
				}
				if v != next[kk] {
					return fmt.Errorf("got %q, want k%d-%d", line, kk, next[kk])
				}
				next[kk]++
				remaining--
			case bytes.HasPrefix(line, []byte("data")), bytes.HasPrefix(line, []byte("event")):
				if j := bytes.IndexByte(data, '\n'); j >= 0 {
					line = append(append(line[:len(line):len(line)], ' '), data[:j]...) // and the next line
				}
				return fmt.Errorf("got %q after %d messages", line, keys*perKey-remaining)
			}
		}
		carry = append(carry[:0], data...)
		if err != nil {
			if remaining == 0 {
				break
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%d messages missing: %w", remaining, err)
		}
	}
	return nil
}
