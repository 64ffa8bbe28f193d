package e2e

import (
	"encoding/base64"
	varint "encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/poll"
)

// A page whose filter (?subject=p.match) skips a long stretch of a
// JetStream route's messages is sent progress frames, an id line alone,
// which move the browser's last event ID. The connection breaks right
// after the stretch: the browser reconnects by itself with a Last-Event-ID
// at most one progress interval (plus the bridge's latency) behind the
// last skipped message, rather than the ID of the last message it
// received, and then receives the next matching message exactly once.
func TestProgressFramesResume(t *testing.T) {
	t.Parallel()
	br := launchBrowser(t)
	ns, js := runJetStream(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}}); err != nil {
		t.Fatal(err)
	}
	publish := func(subject, data string) uint64 {
		t.Helper()
		ack, err := js.Publish(t.Context(), subject, []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	b := startBridge(t, "-route", "/p=jetstream://"+ns.Addr()+"/P")
	b.waitReady()
	px := startProxy(t, b.Addr)
	pg := br.open(px.pageURL("/p?subject=p.match"))
	poll.Until(t, waitFor, "the page's stream is open", func() bool { return count(pg.recorded(), "open") == 1 })
	publish("p.match", "m-1")
	poll.Until(t, waitFor, "the page has m-1", func() bool { return count(pg.recorded(), "event") == 1 })

	// Five seconds of messages the page's filter skips, every 5 ms.
	const stretch = 5 * time.Second
	type sent struct {
		at  time.Time
		seq uint64
	}
	var skipped []sent
	for start := time.Now(); time.Since(start) < stretch; time.Sleep(5 * time.Millisecond) {
		seq := publish("p.skip", fmt.Sprint("s-", len(skipped)+1))
		skipped = append(skipped, sent{time.Now(), seq})
	}
	cutAt := time.Now()
	px.cut()
	poll.Until(t, waitFor, "the page's stream is open again", func() bool { return count(pg.recorded(), "open") >= 2 })

	streams := px.logged()
	if len(streams) < 2 {
		t.Fatalf("%d streams, want a reconnect:\n%s", len(streams), px.describe())
	}
	resumed, err := jetStreamNext(streams[1].lastEventID)
	if err != nil {
		t.Fatalf("the browser resumed from Last-Event-ID %q: %v", streams[1].lastEventID, err)
	}
	// The messages read by the resume point: those before its next
	// sequence. It may not be past the last skipped message, and may leave
	// unread only what was published in the last progress interval, and
	// the bridge's latency.
	last := skipped[len(skipped)-1].seq
	const slack = 750 * time.Millisecond
	i, _ := slices.BinarySearchFunc(skipped, cutAt.Add(-esource.DefaultProgressInterval-slack), func(s sent, at time.Time) int { return s.at.Compare(at) })
	floor := skipped[max(0, i-1)].seq
	covered := resumed - 1
	t.Logf("resumed after sequence %d, %d behind the last skipped message; %d skipped", covered, last-min(last, covered), len(skipped))
	switch {
	case covered > last:
		t.Errorf("the browser resumed after sequence %d, past the last message published, %d", covered, last)
	case covered < floor:
		t.Errorf("the browser resumed after sequence %d: %d skipped messages (%v of them) to read again; want at most those of the last %v, after %d",
			covered, last-covered, cutAt.Sub(skipped[slices.IndexFunc(skipped, func(s sent) bool { return s.seq > covered })].at).Round(time.Millisecond), esource.DefaultProgressInterval+slack, floor)
	}

	// The skipped stretch came as id lines alone, at most about once per
	// progress interval.
	body, _ := streams[0].state()
	if n, most := progressFrames(body), int(stretch/esource.DefaultProgressInterval)+2; n == 0 || n > most {
		t.Errorf("the first stream has %d frames of an id line alone, want 1 to %d:\n%s", n, most, tail(body))
	}

	publish("p.match", "m-2")
	poll.Until(t, waitFor, "the page has m-2", func() bool {
		return slices.ContainsFunc(pg.recorded(), func(r record) bool { return r.Data == "m-2" })
	})
	time.Sleep(200 * time.Millisecond) // a repeat would come with it
	var got []string
	for _, r := range pg.recorded() {
		if r.Kind == "event" {
			got = append(got, r.Type+" "+r.Data)
		}
	}
	if want := []string{"message m-1", "message m-2"}; !slices.Equal(got, want) {
		t.Errorf("the page recorded %q, want %q", got, want)
	}
}

// progressFrames counts the frames of body, an SSE stream as esbridge
// writes it, that are an id line alone.
func progressFrames(body string) int {
	n := 0
	for _, frame := range strings.Split(body, "\n\n") {
		frame = strings.TrimPrefix(frame, "\n")
		if strings.HasPrefix(frame, "id: ") && !strings.Contains(frame, "\n") {
			n++
		}
	}
	return n
}

// jetStreamNext returns the next stream sequence of a JetStream route's
// event ID (see bridge/id.go): the messages before it have been read.
func jetStreamNext(id string) (uint64, error) {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		return 0, err
	}
	if len(b) < 8 || b[0]>>4 != 2 || b[0]&15 != 0 {
		return 0, errors.New("not a version 2 position ID")
	}
	b = b[7:]
	n, k := varint.Uvarint(b)
	if k <= 0 || n != 1 {
		return 0, errors.New("not one offset")
	}
	seq, k2 := varint.Uvarint(b[k:])
	if k2 <= 0 || k+k2 != len(b) {
		return 0, errors.New("malformed offset")
	}
	return seq, nil
}
