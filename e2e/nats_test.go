package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/esbridge/esbridge/internal/poll"
)

// A core NATS route keeps no history: after a NATS server restart the
// page's code receives a gap event, with an ID, then every message
// published once the bridge has subscribed again.
func TestCoreNATSGap(t *testing.T) {
	t.Parallel()
	br := launchBrowser(t)
	ns := runNATS(t)
	nc, err := nats.Connect("nats://"+ns.Addr(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	publish := func(s string) {
		t.Helper()
		if err := nc.Publish("ticks.eu", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	b := startBridge(t, "-route", "/ticks=nats://"+ns.Addr()+"/ticks.>")
	b.waitReady()
	px := startProxy(t, b.Addr)
	pg := br.open(px.pageURL("/ticks"))

	before := publishUntilRecorded(t, pg, "before-", publish)
	ns.Restart()
	after := publishUntilRecorded(t, pg, "after-", publish)

	rs := pg.recorded()
	var events []record
	for _, r := range rs {
		if r.Kind == "event" {
			events = append(events, r)
		}
	}
	// The events: before-i..before-n, a gap, after-j..after-m.
	i := 0
	for i < len(events) && strings.HasPrefix(events[i].Data, "before-") {
		i++
	}
	if i == 0 || events[i-1].Data != "before-"+strconv.Itoa(before) {
		t.Fatalf("the page's events do not begin with messages before-1..before-%d:\n%s", before, describe(rs))
	}
	if i >= len(events) || events[i].Type != "gap" {
		t.Fatalf("no gap event after before-%d:\n%s", before, describe(rs))
	}
	gap := events[i]
	t.Logf("after before-%d: %v", before, gap)
	var g struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(gap.Data), &g); err != nil || g.Reason == "" || gap.ID == "" {
		t.Errorf("gap event %v: want an ID, and JSON data with a reason (%v)", gap, err)
	}
	rest := events[i+1:]
	if len(rest) == 0 {
		t.Fatalf("no message after the gap:\n%s", describe(rs))
	}
	first, err := strconv.Atoi(strings.TrimPrefix(rest[0].Data, "after-"))
	if err != nil {
		t.Fatalf("after the gap: %v, want after-N:\n%s", rest[0], describe(rs))
	}
	for k, r := range rest {
		if want := "after-" + strconv.Itoa(first+k); r.Type != "message" || r.Data != want || first+len(rest)-1 != after {
			t.Fatalf("after the gap, want messages after-%d..after-%d, each once:\n%s", first, after, describe(rs))
		}
	}
}

// publishUntilRecorded publishes prefix1, prefix2, ... every 100 ms until
// the page has recorded one of them, for a stream that drops what is
// published before it subscribes. It returns the number of the last one
// published, once the page has it.
func publishUntilRecorded(t *testing.T, pg *page, prefix string, publish func(string)) int {
	t.Helper()
	n := 0
	has := func(match func(data string) bool) bool {
		for _, r := range pg.recorded() {
			if r.Kind == "event" && match(r.Data) {
				return true
			}
		}
		return false
	}
	if !poll.Wait(waitFor, func() bool {
		if has(func(data string) bool { return strings.HasPrefix(data, prefix) }) {
			return true
		}
		n++
		publish(prefix + strconv.Itoa(n))
		return false
	}) {
		t.Fatalf("no %s message reached the page within %v:\n%s", prefix, waitFor, describe(pg.recorded()))
	}
	last := prefix + strconv.Itoa(n)
	poll.Until(t, waitFor, "the page has "+last, func() bool { return has(func(data string) bool { return data == last }) })
	return n
}
