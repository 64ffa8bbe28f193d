package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/internal/poll"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"
)

// readSnapshot reads a snapshot from c, whose route sends envelopes: the
// reason of its begin event, the data of each key, and its end event.
func readSnapshot(t *testing.T, c *sseClient) (string, map[string]string, string) {
	t.Helper()
	begin := c.next()
	var b struct{ Reason string }
	if begin.Type != "snapshot-begin" || json.Unmarshal([]byte(begin.Data), &b) != nil {
		t.Fatalf("got %+v, want snapshot-begin; received:\n%s", begin, c.body())
	}
	table := map[string]string{}
	for {
		ev := c.next()
		if ev.Type == "snapshot-end" {
			if want := fmt.Sprintf(`{"keys":%d}`, len(table)); ev.Data != want || ev.LastEventID == "" {
				t.Fatalf("got %+v, want %s with an ID", ev, want)
			}
			return b.Reason, table, ev.LastEventID
		}
		var e struct{ Key, Data string }
		if ev.Type != "message" || json.Unmarshal([]byte(ev.Data), &e) != nil || ev.LastEventID != "" {
			t.Fatalf("got %+v in a snapshot, want an envelope without ID", ev)
		}
		table[e.Key] = e.Data
	}
}

func sameTable(t *testing.T, got, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) { // fmt sorts maps
		t.Fatalf("snapshot %v, want %v", got, want)
	}
}

// TestSnapshotViews: a page of a NATS KV bucket and one of a Kafka topic
// get the state with ?view=snapshot (deleted keys left out, the KV
// prefix not shown), then the changes live, deletes as delete events; a
// page resuming on another instance from the snapshot's end gets what
// followed, not the snapshot again; the metrics count the tables' keys and
// the snapshots sent.
func TestSnapshotViews(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	js, err := jetstream.New(ns.conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "settings"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{"theme", "dark"}, {"lang", "en"}, {"tz", "UTC"}, {"lang", "fr"}} {
		if _, err := kv.PutString(ctx, p[0], p[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "tz"); err != nil {
		t.Fatal(err)
	}
	top := newKafkaTopic(t, kafka.ConfigEntry{ConfigName: "cleanup.policy", ConfigValue: "compact"})
	top.produceTo(0, "a", "a1", "a2")
	top.produceTo(1, "b", "b1")
	top.produceTo(2, "c", "c1", "") // c deleted: kafka-go reads an empty value as a tombstone

	routes := []string{
		"-route", "/settings=jetstream://" + ns.Addr() + "/KV_settings?snapshot=subject&format=envelope",
		"-route", top.route("/t", "snapshot=key&format=envelope"),
	}
	plain := "/plain=jetstream://" + ns.Addr() + "/KV_settings"
	b := startBridge(t, append([]string{"-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-route", plain}, routes...)...)
	b.WaitReadyz(200)
	for _, tc := range []struct{ path, reason string }{
		{"/settings?view=table", "want snapshot"},
		{"/plain?view=snapshot", "no snapshot view"},
		{"/t?view=snapshot&key=a", "takes no subject or key filter"},
	} {
		if code, body, _ := b.Get(tc.path); code != 400 || !strings.Contains(body, tc.reason) {
			t.Errorf("GET %s: %d %q, want 400 saying %q", tc.path, code, body, tc.reason)
		}
	}

	s := connect(t, b.URL("/settings?view=snapshot"), "")
	reason, table, end := readSnapshot(t, s)
	if reason != "new" {
		t.Fatalf("reason %q, want new", reason)
	}
	sameTable(t, table, map[string]string{"theme": "dark", "lang": "fr"})
	k := connect(t, b.URL("/t?view=snapshot"), "")
	_, table, kend := readSnapshot(t, k)
	sameTable(t, table, map[string]string{"a": "a2", "b": "b1"})

	if err := kv.Delete(ctx, "theme"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "lang", "de"); err != nil {
		t.Fatal(err)
	}
	if ev := s.next(); ev.Type != "delete" || ev.Data != `{"key":"theme"}` {
		t.Fatalf("got %+v, want the delete of theme", ev)
	}
	if ev := s.next(); !strings.Contains(ev.Data, `"key":"lang"`) || !strings.Contains(ev.Data, `"data":"de"`) {
		t.Fatalf("got %+v, want lang=de", ev)
	}
	top.produceTo(1, "b", "")
	if ev := k.next(); ev.Type != "delete" || ev.Data != `{"key":"b"}` {
		t.Fatalf("got %+v, want the delete of b", ev)
	}

	// Another instance: the resumes continue after the snapshots' ends.
	other := startBridge(t, append([]string{"-listen", "127.0.0.1:0"}, routes...)...)
	other.WaitReadyz(200)
	rs := connect(t, other.URL("/settings?view=snapshot"), end)
	if ev := rs.next(); ev.Type != "delete" {
		t.Fatalf("resumed after the snapshot: got %+v, want the delete of theme", ev)
	}
	rk := connect(t, other.URL("/t?view=snapshot"), kend)
	if ev := rk.next(); ev.Type != "delete" || ev.Data != `{"key":"b"}` {
		t.Fatalf("resumed after the snapshot: got %+v, want the delete of b", ev)
	}

	m := b.waitMetric(`esbridge_snapshot_keys{route="/settings"}`, "1 key: lang", equals(1))
	for key, want := range map[string]float64{
		`esbridge_snapshot_ready{route="/settings"}`:          1,
		`esbridge_snapshots_total{route="/settings"}`:         1,
		`esbridge_snapshots_refused_total{route="/settings"}`: 0,
		`esbridge_snapshot_keys{route="/t"}`:                  1,
		`esbridge_snapshots_total{route="/t"}`:                1,
	} {
		if m[key] != want {
			t.Errorf("%s = %v, want %v", key, m[key], want)
		}
	}
	if m[`esbridge_snapshot_bytes{route="/settings"}`] <= 0 {
		t.Errorf("esbridge_snapshot_bytes is %v", m[`esbridge_snapshot_bytes{route="/settings"}`])
	}
}

// TestSnapshotAMQPStream: a RabbitMQ stream keyed by a header has a
// snapshot view too. Its live reader learns where the stream ends only
// with its first message: the table is read up to it, and pages that ask
// before it comes wait, with heartbeats.
func TestSnapshotAMQPStream(t *testing.T) {
	rb := newRabbit(t)
	stream := rb.stream(nil)
	publish := func(key, value string) {
		t.Helper()
		rb.do("publish", func(ch *amqp.Channel) error {
			dc, err := ch.PublishWithDeferredConfirm("", stream, false, false,
				amqp.Publishing{Headers: amqp.Table{"k": key}, Body: []byte(value)})
			if err != nil {
				return err
			}
			if !dc.Wait() {
				return errors.New("not confirmed")
			}
			return nil
		})
	}
	publish("a", "a1")
	publish("b", "b1")
	publish("a", "a2")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-heartbeat", "200ms",
		"-route", rb.route("/s", "stream="+stream+"&snapshot=header:k&format=envelope"))
	b.WaitReadyz(200)

	c := connect(t, b.URL("/s?view=snapshot"), "")
	poll.Until(t, waitFor, "heartbeats while the page waits", func() bool { return strings.Count(c.body(), ":\n\n") >= 3 })
	publish("c", "c1")
	_, table, _ := readSnapshot(t, c)
	sameTable(t, table, map[string]string{"a": "a2", "b": "b1", "c": "c1"})
	publish("b", "b2")
	if ev := c.next(); !strings.Contains(ev.Data, `"key":"b"`) || !strings.Contains(ev.Data, `"data":"b2"`) {
		t.Fatalf("got %+v, want b=b2", ev)
	}
}
