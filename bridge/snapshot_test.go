package bridge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/poll"
	natssource "github.com/esbridge/esbridge/source/nats"
)

// These tests serve snapshot views (?view=snapshot) of JetStream streams
// from an embedded nats-server: a page gets the state as of one
// position, then every change after it.

// snapBridge runs a bridge with one route /s on stream, and returns it
// and the route's URL once it is ready.
func snapBridge(t *testing.T, addr, stream string, cfg bridge.Config, opts bridge.Options) (*bridge.Bridge, string) {
	t.Helper()
	src, err := natssource.New(natssource.Config{Servers: []string{addr}, Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	return serveRoute(t, bridge.Route{Path: "/s", Source: src, Options: opts}, cfg)
}

// serveRoute runs a bridge serving rt until the test ends, and returns it
// and the route's URL once it is ready. It closes rt.Source at the end.
func serveRoute(t *testing.T, rt bridge.Route, cfg bridge.Config) (*bridge.Bridge, string) {
	t.Helper()
	b, err := bridge.New(cfg, rt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.Run(ctx) })
	srv := httptest.NewServer(b)
	t.Cleanup(func() {
		b.Shutdown(context.Background())
		srv.Close()
		cancel()
		wg.Wait()
		rt.Source.Close()
	})
	waitReady(t, srv.URL)
	return b, srv.URL + rt.Path
}

// snapStats returns the route's snapshot figures.
func snapStats(b *bridge.Bridge) bridge.SnapshotStats {
	return *b.Stats(context.Background())[0].Snapshot
}

// snapshot reads a snapshot from c: the reason of its begin event, its
// entries by key (with the envelope's data), and the ID of its end.
func readSnapshot(t testing.TB, c *sseClient) (reason string, table map[string]string, endID string) {
	t.Helper()
	ev := c.next()
	if ev.typ != bridge.SnapshotBeginType || ev.id != "" {
		t.Fatalf("got %+v, want a snapshot-begin without ID", ev)
	}
	var begin struct{ Reason string }
	if err := json.Unmarshal([]byte(ev.data), &begin); err != nil {
		t.Fatal(err)
	}
	table = map[string]string{}
	for {
		ev := c.next()
		if ev.typ == bridge.SnapshotEndType {
			var end struct{ Keys int }
			if err := json.Unmarshal([]byte(ev.data), &end); err != nil {
				t.Fatal(err)
			}
			if end.Keys != len(table) || ev.id == "" {
				t.Fatalf("snapshot-end %+v after %d keys", ev, len(table))
			}
			return begin.Reason, table, ev.id
		}
		if ev.typ != "" || ev.id != "" {
			t.Fatalf("got %+v in a snapshot, want entries without ID", ev)
		}
		k, d := envelopeEntry(t, ev.data)
		if _, dup := table[k]; dup {
			t.Fatalf("key %q twice in a snapshot", k)
		}
		table[k] = d
	}
}

// envelopeEntry returns the key and data of an envelope.
func envelopeEntry(t testing.TB, data string) (key, payload string) {
	t.Helper()
	var e struct{ Key, Data string }
	if err := json.Unmarshal([]byte(data), &e); err != nil {
		t.Fatalf("%q: %v", data, err)
	}
	return e.Key, e.Data
}

// putKeys publishes rounds of values v<round> for keys s.k0..s.k<keys-1>,
// and returns the state: the last value of each key.
func putKeys(t testing.TB, js jetstream.JetStream, keys, rounds int) map[string]string {
	t.Helper()
	state := map[string]string{}
	for r := range rounds {
		for k := range keys {
			subj, v := fmt.Sprintf("s.k%d", k), fmt.Sprintf("v%d", r)
			if _, err := js.Publish(context.Background(), subj, []byte(v)); err != nil {
				t.Fatal(err)
			}
			state[subj] = v
		}
	}
	return state
}

func equalTables(t testing.TB, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("snapshot of %d keys, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %q is %q in the snapshot, want %q", k, got[k], v)
		}
	}
}

// TestSnapshotJetStream: a page gets the stream's state as of one
// position, then every change after it; a resume from the snapshot's end
// continues without the snapshot.
func TestSnapshotJetStream(t *testing.T) {
	js, addr := jetStream(t)
	state := putKeys(t, js, 20, 3)
	b, url := snapBridge(t, addr, "S", bridge.Config{}, bridge.Options{Snapshot: bridge.TypeSubject, Format: bridge.FormatEnvelope})

	c := open(t, url+"?view=snapshot", "")
	reason, table, end := readSnapshot(t, c)
	if reason != "new" {
		t.Fatalf("reason %q, want new", reason)
	}
	equalTables(t, table, state)

	if _, err := js.Publish(t.Context(), "s.k3", []byte("later")); err != nil {
		t.Fatal(err)
	}
	ev := c.next()
	if k, d := envelopeEntry(t, ev.data); k != "s.k3" || d != "later" || ev.id == "" {
		t.Fatalf("got %+v after the snapshot, want s.k3=later", ev)
	}
	// A resume from the snapshot's end gets what followed, no snapshot.
	r := open(t, url+"?view=snapshot", end)
	if ev := r.next(); ev.typ != "" || !strings.Contains(ev.data, `"later"`) {
		t.Fatalf("resumed from the snapshot's end: got %+v, want s.k3=later", ev)
	}
	// A client without view=snapshot gets the stream as ever.
	plain := open(t, url, "")
	if _, err := js.Publish(t.Context(), "s.k4", []byte("plain")); err != nil {
		t.Fatal(err)
	}
	if ev := plain.next(); ev.typ != "" || !strings.Contains(ev.data, `"plain"`) {
		t.Fatalf("plain client: got %+v", ev)
	}
	// A snapshot taken now has both changes.
	state["s.k3"], state["s.k4"] = "later", "plain"
	poll.Until(t, 10*time.Second, "the table has s.k4=plain", func() bool {
		_, table, _ := readSnapshot(t, open(t, url+"?view=snapshot", ""))
		return table["s.k4"] == "plain"
	})
	_, table, _ = readSnapshot(t, open(t, url+"?view=snapshot", ""))
	equalTables(t, table, state)
	if st := snapStats(b); !st.Ready || st.Keys != 20 || st.Served < 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSnapshotKV: a KV bucket's keys are shown without the $KV prefix,
// deletes and purges remove keys from snapshots and are sent live as
// delete events, and the raw format tells each message's key in its first
// line.
func TestSnapshotKV(t *testing.T) {
	js, addr := jetStream(t)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "settings", History: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, kvp := range [][2]string{{"theme", "dark"}, {"lang", "en"}, {"tz", "UTC"}, {"lang", "fr"}, {"beta", "on"}, {"a/b=c", "x"}} {
		if _, err := kv.PutString(ctx, kvp[0], kvp[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "tz"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	_, url := snapBridge(t, addr, "KV_settings", bridge.Config{}, bridge.Options{Snapshot: bridge.TypeSubject})

	c := open(t, url+"?view=snapshot", "")
	if ev := c.next(); ev.typ != bridge.SnapshotBeginType {
		t.Fatalf("got %+v, want snapshot-begin", ev)
	}
	table := map[string]string{}
	for {
		ev := c.next()
		if ev.typ == bridge.SnapshotEndType {
			break
		}
		key, value, ok := strings.Cut(ev.data, "\n")
		if !ok {
			t.Fatalf("raw entry %q has no key line", ev.data)
		}
		table[key] = value
	}
	want := map[string]string{"theme": "dark", "lang": "fr", "a%2Fb=c": "x"}
	equalTables(t, table, want)

	if err := kv.Delete(ctx, "theme"); err != nil {
		t.Fatal(err)
	}
	ev := c.next()
	if ev.typ != bridge.DeleteType || ev.data != `{"key":"theme"}` || ev.id == "" {
		t.Fatalf("got %+v, want the delete of theme", ev)
	}
}

// TestSnapshotRefused: a route whose table grows past its bound refuses
// snapshots with a gap event, counts them, and goes on streaming.
func TestSnapshotRefused(t *testing.T) {
	js, addr := jetStream(t)
	putKeys(t, js, 10, 1)
	b, url := snapBridge(t, addr, "S", bridge.Config{}, bridge.Options{Snapshot: bridge.TypeSubject, SnapshotMaxKeys: 5})

	poll.Until(t, 10*time.Second, "the table is over its bound", func() bool { return snapStats(b).Over })
	c := open(t, url+"?view=snapshot", "")
	ev := c.next()
	if ev.typ != "gap" || !strings.Contains(ev.data, `"reason":"snapshot-refused"`) || !strings.Contains(ev.data, "snapshot_max_keys=5") {
		t.Fatalf("got %+v, want a snapshot-refused gap", ev)
	}
	if _, err := js.Publish(t.Context(), "s.k1", []byte("live")); err != nil {
		t.Fatal(err)
	}
	if ev := c.next(); ev.data != "s.k1\nlive" {
		t.Fatalf("got %+v, want the live message", ev)
	}
	if st := snapStats(b); st.Refused != 1 || st.Ready || st.Keys != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSnapshotExpired: a client of the snapshot view whose position the
// broker no longer holds gets a fresh snapshot (reason expired), rather
// than a gap; a client of the plain view gets the gap.
func TestSnapshotExpired(t *testing.T) {
	js, addr := jetStream(t)
	if _, err := js.UpdateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, MaxMsgs: 30}); err != nil {
		t.Fatal(err)
	}
	putKeys(t, js, 5, 1) // seqs 1-5
	_, url := snapBridge(t, addr, "S", bridge.Config{Backlog: 4}, bridge.Options{Snapshot: bridge.TypeSubject, Format: bridge.FormatEnvelope})
	_, _, early := readSnapshot(t, open(t, url+"?view=snapshot", "")) // at seq 6
	state := putKeys(t, js, 5, 10)                                    // seqs 6-55: 6-25 are gone

	c := open(t, url+"?view=snapshot", early)
	reason, table, _ := readSnapshot(t, c)
	if reason != "expired" {
		t.Fatalf("reason %q, want expired", reason)
	}
	equalTables(t, table, state)

	plain := open(t, url, early)
	if ev := plain.next(); ev.typ != "gap" || !strings.Contains(ev.data, `"reason":"expired"`) {
		t.Fatalf("plain client: got %+v, want an expired gap", ev)
	}
}

// TestSnapshotCrowd: 2,000 pages asking for a snapshot at once all get
// it, from memory: no broker reader is opened for them.
func TestSnapshotCrowd(t *testing.T) {
	const clients, keys = 2000, 50
	js, addr := jetStream(t)
	state := putKeys(t, js, keys, 2)
	b, url := snapBridge(t, addr, "S", bridge.Config{}, bridge.Options{Snapshot: bridge.TypeSubject, Format: bridge.FormatEnvelope})
	poll.Until(t, 10*time.Second, "the table is built", func() bool { return snapStats(b).Ready })
	readers := countReaders(t, js)

	tr := &http.Transport{MaxIdleConnsPerHost: -1}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() { errs <- snapshotKeys(hc, url+"?view=snapshot", len(state)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := readers.Most(); n != 0 {
		t.Fatalf("%d broker readers opened for the snapshots, want none", n)
	}
	if st := snapStats(b); st.Served != clients {
		t.Fatalf("%d snapshots served, want %d", st.Served, clients)
	}
}

// snapshotKeys reads a snapshot at url and checks it has keys keys.
func snapshotKeys(hc *http.Client, url string, keys int) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	n := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(line, "data: {\"subject\""):
			n++
		case line == "event: snapshot-end\n":
			if n != keys {
				return fmt.Errorf("snapshot of %d keys, want %d", n, keys)
			}
			return nil
		}
	}
}

// TestSnapshotConsistent: pages that take their snapshots while the
// stream changes (updates and deletes over a few keys) and then follow
// it live all end with the broker's final state, exactly: each snapshot
// was the state as of its end's position, and the stream after it had
// no change twice and none missing.
func TestSnapshotConsistent(t *testing.T) {
	const pages, keys, writes = 20, 30, 1500
	js, addr := jetStream(t)
	putKeys(t, js, keys, 1)
	_, url := snapBridge(t, addr, "S", bridge.Config{Backlog: 64}, bridge.Options{Snapshot: bridge.TypeSubject, Format: bridge.FormatEnvelope})

	final := map[string]string{}
	for k := range keys {
		final[fmt.Sprintf("s.k%d", k)] = "v0"
	}
	var written atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range writes {
			subj := fmt.Sprintf("s.k%d", (i*7)%keys)
			msg := &nats.Msg{Subject: subj, Data: fmt.Appendf(nil, "w%d", i), Header: nats.Header{}}
			if i%5 == 0 {
				msg.Data = nil
				msg.Header.Set("KV-Operation", "DEL")
				delete(final, subj)
			} else {
				final[subj] = string(msg.Data)
			}
			if _, err := js.PublishMsg(context.Background(), msg); err != nil {
				t.Error(err)
				return
			}
			written.Add(1)
		}
		if _, err := js.Publish(context.Background(), "s.end", []byte("end")); err != nil {
			t.Error(err)
		}
	})
	tables := make([]map[string]string, pages)
	for p := range pages {
		wg.Go(func() {
			// Spread over the writes.
			poll.Until(t, 30*time.Second, "the writes go on", func() bool { return int(written.Load()) >= p*writes/pages })
			tables[p] = followToEnd(t, url, "s.end")
		})
	}
	wg.Wait()
	for p, table := range tables {
		if fmt.Sprint(table) != fmt.Sprint(final) {
			t.Fatalf("page %d ends with %v, want %v", p, table, final)
		}
	}
}

// followToEnd reads a snapshot at url, then the changes after it, into a
// table, until the key end is in it, and returns the table without end.
func followToEnd(t testing.TB, url, end string) map[string]string {
	table := follow(t, url, func(table map[string]string) bool { return table[end] != "" })
	delete(table, end)
	return table
}

// follow reads a snapshot at url, then the changes after it, into a
// table, until done says it is done with it, and returns it.
func follow(t testing.TB, url string, done func(map[string]string) bool) map[string]string {
	c := open(t, url+"?view=snapshot", "")
	_, table, _ := readSnapshot(t, c)
	for !done(table) { // done by the snapshot alone, maybe
		ev := c.next()
		if ev.typ == bridge.DeleteType {
			var d struct{ Key string }
			if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
				t.Error(err)
				return nil
			}
			delete(table, d.Key)
			continue
		}
		k, v := envelopeEntry(t, ev.data)
		table[k] = v
	}
	return table
}
