package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/ssetest"
)

// A NATS server restart in the middle of a JetStream route's stream: the
// bridge is not ready while NATS is down, ready again after, and a client
// that stayed connected, as well as one that reconnects with its last ID,
// gets every message once, in order, and no gap event.
func TestNATSRestartJetStream(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/orders="+stream)
	b.WaitReadyz(200)

	stays := connect(t, b.URL("/orders"), "")
	stays.syncLive(pub.publish)
	leaves := connect(t, b.URL("/orders"), stays.lastEventID())
	pub.publish(seq("m", 1, 5)...)
	stays.expectData(seq("m", 1, 5)...)
	leaves.expectData(seq("m", 1, 5)...)
	leaves.close()

	ns.Stop()
	b.WaitLog("nats: disconnected", 1)
	ns.Start()
	b.WaitLog("nats: reconnected", 1)
	b.WaitReadyz(200)

	pub.publish(seq("m", 6, 10)...)
	stays.expectData(seq("m", 6, 10)...)
	back := connect(t, b.URL("/orders"), leaves.lastEventID())
	back.expectData(seq("m", 6, 10)...)
	pub.publish("end")
	stays.expectData("end")
	back.expectData("end")

	// A second restart, while messages are on their way.
	pub.publish(seq("m", 11, 15)...)
	ns.Restart()
	pub.publish(seq("m", 16, 20)...)
	b.WaitLog("nats: reconnected", 2)
	b.WaitReadyz(200)
	for _, c := range []*sseClient{stays, back} {
		c.expectData(seq("m", 11, 20)...)
	}
	pub.publish("end2")
	stays.expectData("end2")
	back.expectData("end2")
}

// A NATS server restart under a core NATS route, which keeps no history:
// the connected client is told with a gap event, then receives the
// messages published after the restart.
func TestNATSRestartCore(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	nc := ns.conn()
	publish := func(payloads ...string) {
		t.Helper()
		for _, p := range payloads {
			if err := nc.Publish("ticks.eu", []byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		nc.Flush()
	}
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/ticks=nats://"+ns.Addr()+"/ticks.>")
	b.WaitReadyz(200)

	c := connect(t, b.URL("/ticks"), "")
	c.syncLive(publish)
	publish(seq("before-", 1, 3)...)
	c.expectData(seq("before-", 1, 3)...)

	ns.Restart()

	// Core NATS drops what is published before the bridge has subscribed
	// again: publish until a message comes through.
	var gap ssetest.Event
	haveGap := false
	deadline := time.Now().Add(waitFor)
	for i := 1; ; i++ {
		publish("after-" + strconv.Itoa(i))
		select {
		case ev := <-c.events:
			if !haveGap {
				if ev.Type != "gap" {
					t.Fatalf("first event after the restart: type %q data %q, want a gap event; received:\n%s", ev.Type, ev.Data, c.body())
				}
				gap, haveGap = ev, true
				ev = c.next()
			}
			n, err := strconv.Atoi(strings.TrimPrefix(ev.Data, "after-"))
			if ev.Type != "message" || !strings.HasPrefix(ev.Data, "after-") || err != nil {
				t.Fatalf("after the gap: type %q data %q, want a message after-N; received:\n%s", ev.Type, ev.Data, c.body())
			}
			for n < i { // those published since are on their way, in order
				n++
				c.expectData("after-" + strconv.Itoa(n))
			}
			publish(seq("later-", 1, 3)...)
			c.expectData(seq("later-", 1, 3)...)
			var g struct {
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal([]byte(gap.Data), &g); err != nil || g.Reason == "" {
				t.Errorf("gap data %q: want JSON with a reason (%v)", gap.Data, err)
			}
			if gap.LastEventID == "" {
				t.Errorf("gap event without an ID: a browser reconnecting after it would not resume past it")
			}
			b.WaitReadyz(200)
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing arrived after the restart within %v; received:\n%s", waitFor, c.body())
		}
	}
}

// While the NATS server is down, the bridge is not ready (/readyz 503, as
// the bridge documents: "200 once every source is connected"), and it is
// ready again once NATS is back; /healthz stays 200 throughout.
func TestNATSDownNotReady(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"jetstream", "core"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ns := runNATS(t)
			route := "/ticks=nats://" + ns.Addr() + "/ticks.>"
			if kind == "jetstream" {
				_, stream := ns.jetStream("TICKS")
				route = "/ticks=" + stream
			}
			b := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
			b.WaitReadyz(200)
			ns.Stop()
			b.WaitLog("nats: disconnected", 1)
			b.WaitReadyz(503)
			if code, _, _ := b.Get("/healthz"); code != 200 {
				t.Errorf("/healthz %d while NATS is down, want 200", code)
			}
			ns.Start()
			b.WaitReadyz(200)
		})
	}
}
