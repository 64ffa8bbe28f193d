package bridge_test

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	kafkasource "github.com/esbridge/esbridge/source/kafka"
)

// writeKafka writes msgs to topic, each key's to one partition.
func writeKafka(t *testing.T, brokers []string, topic string, msgs ...kafka.Message) {
	t.Helper()
	tr := &kafka.Transport{} // of its own, as kafkaTopic's
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: tr}
	defer w.Close()
	poll.UntilNil(t, 30*time.Second, "the messages are produced", func() error {
		return w.WriteMessages(t.Context(), msgs...)
	})
}

// TestSnapshotKafka: a snapshot of a keyed topic of several partitions is
// the latest value of every key as of one position, tombstones leaving
// their keys out; then updates and deletes follow live, and a resume from
// the snapshot's end does not send it again.
func TestSnapshotKafka(t *testing.T) {
	brokers := brokertest.Kafka(t)
	topic := kafkaTopic(t, brokers, 3)
	state := map[string]string{}
	var msgs []kafka.Message
	for round := range 3 {
		for k := range 30 {
			key, v := "k"+strconv.Itoa(k), fmt.Sprintf("v%d-%d", k, round)
			msgs = append(msgs, kafka.Message{Key: []byte(key), Value: []byte(v)})
			state[key] = v
		}
	}
	for k := range 5 { // tombstones
		key := "k" + strconv.Itoa(k*3)
		msgs = append(msgs, kafka.Message{Key: []byte(key)})
		delete(state, key)
	}
	writeKafka(t, brokers, topic, msgs...)

	src, err := kafkasource.New(kafkasource.Config{Brokers: brokers, Topic: topic, MetadataInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b, url := serveRoute(t, bridge.Route{Path: "/t", Source: src,
		Options: bridge.Options{Snapshot: bridge.SnapshotKey, Format: bridge.FormatEnvelope}}, bridge.Config{})

	c := open(t, url+"?view=snapshot", "")
	reason, table, end := readSnapshot(t, c)
	if reason != "new" {
		t.Fatalf("reason %q", reason)
	}
	equalTables(t, table, state)

	writeKafka(t, brokers, topic, kafka.Message{Key: []byte("k1"), Value: []byte("later")}, kafka.Message{Key: []byte("k2")})
	got := map[string]string{}
	for range 2 {
		ev := c.next()
		if ev.id == "" {
			t.Fatalf("live event %+v without ID", ev)
		}
		got[ev.typ] = ev.data
	}
	if k, d := envelopeEntry(t, got[""]); k != "k1" || d != "later" {
		t.Fatalf("live update %q", got[""])
	}
	if got[bridge.DeleteType] != `{"key":"k2"}` {
		t.Fatalf("live delete %q", got[bridge.DeleteType])
	}

	// A resume from the snapshot's end: the two changes, no snapshot.
	r := open(t, url+"?view=snapshot", end)
	for range 2 {
		if ev := r.next(); ev.typ == bridge.SnapshotBeginType {
			t.Fatalf("a resume got a snapshot")
		}
	}
	// A snapshot now has them.
	state["k1"] = "later"
	delete(state, "k2")
	_, table, _ = readSnapshot(t, open(t, url+"?view=snapshot", ""))
	equalTables(t, table, state)
	if st := b.Stats(t.Context())[0].Snapshot; st.Keys != len(state) {
		t.Fatalf("stats %+v, want %d keys", st, len(state))
	}
}

// TestSnapshotKafkaConsistent: as TestSnapshotConsistent, on a topic of
// several partitions, whose snapshots end at positions of every
// partition.
func TestSnapshotKafkaConsistent(t *testing.T) {
	const pages, keys, batches, batch = 10, 30, 40, 20
	brokers := brokertest.Kafka(t)
	topic := kafkaTopic(t, brokers, 3)
	src, err := kafkasource.New(kafkasource.Config{Brokers: brokers, Topic: topic, MetadataInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, url := serveRoute(t, bridge.Route{Path: "/t", Source: src,
		Options: bridge.Options{Snapshot: bridge.SnapshotKey, Format: bridge.FormatEnvelope}}, bridge.Config{Backlog: 64})

	final := map[string]string{}
	var written atomic.Int32
	var finished atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for b := range batches {
			var msgs []kafka.Message
			for i := b * batch; i < (b+1)*batch; i++ {
				key := "k" + strconv.Itoa((i*7)%keys)
				m := kafka.Message{Key: []byte(key)}
				if i%5 == 0 {
					delete(final, key)
				} else {
					m.Value = fmt.Appendf(nil, "w%d", i)
					final[key] = string(m.Value)
				}
				msgs = append(msgs, m)
			}
			writeKafka(t, brokers, topic, msgs...)
			written.Add(1)
		}
		finished.Store(true)
		// A page that had every message before finished was set waits
		// for one more, to look again: a key's final value written
		// again, which changes no table.
		for k, v := range final {
			writeKafka(t, brokers, topic, kafka.Message{Key: []byte(k), Value: []byte(v)})
			break
		}
	})
	// Partitions are merged as they come: a page is done once the writer
	// is, and its table is the final state (else it waits for more, and
	// fails when none comes).
	done := func(table map[string]string) bool {
		return finished.Load() && fmt.Sprint(table) == fmt.Sprint(final)
	}
	tables := make([]map[string]string, pages)
	for p := range pages {
		wg.Go(func() {
			poll.Until(t, 30*time.Second, "the writes go on", func() bool { return int(written.Load()) >= p*batches/pages })
			tables[p] = follow(t, url, done)
		})
	}
	wg.Wait()
	for p, table := range tables {
		if fmt.Sprint(table) != fmt.Sprint(final) {
			t.Fatalf("page %d ends with %v, want %v", p, table, final)
		}
	}
}
