package main

import (
	"encoding/json"
	"net/url"
	"strconv"
	"syscall"
	"testing"
)

// A client that disconnects and comes back with its last event ID, in the
// Last-Event-ID header or, on a fresh request, in ?lastEventId=, receives
// exactly the messages that followed, those published while it was away
// included. With a backlog of 3 the resume point has left the bridge's
// memory, so the messages come from JetStream before the client joins the
// live stream.
func TestResumeAfterDisconnect(t *testing.T) {
	t.Parallel()
	for _, backlog := range []int{0, 3} {
		t.Run("backlog="+strconv.Itoa(backlog), func(t *testing.T) {
			ns := runNATS(t)
			pub, stream := ns.jetStream("ORDERS")
			args := []string{"-listen", "127.0.0.1:0", "-route", "/orders=" + stream}
			if backlog > 0 {
				args = append(args, "-backlog", strconv.Itoa(backlog))
			}
			b := startBridge(t, args...)
			b.WaitReadyz(200)

			c := connect(t, b.URL("/orders"), "")
			c.syncLive(pub.publish)
			pub.publish(seq("m", 1, 5)...)
			last := c.expectData(seq("m", 1, 5)...)
			id := c.lastEventID()
			if id == "" || id != last.LastEventID {
				t.Fatalf("lastEventId %q after m5 (event's %q), want m5's ID", id, last.LastEventID)
			}
			c.close()

			pub.publish(seq("m", 6, 10)...) // while the client is away

			byHeader := connect(t, b.URL("/orders"), id)
			byQuery := connect(t, b.URL("/orders?lastEventId="+url.QueryEscape(id)), "")
			// The header wins over the query, which automatic reconnects
			// of a browser keep sending.
			both := connect(t, b.URL("/orders?lastEventId=garbage"), id)
			resumed := []*sseClient{byHeader, byQuery, both}
			for _, c := range resumed {
				c.expectData(seq("m", 6, 10)...)
			}
			pub.publish(seq("m", 11, 15)...)
			pub.publish("end")
			for _, c := range resumed {
				c.expectData(seq("m", 11, 15)...)
				c.expectData("end") // and nothing else
			}
		})
	}
}

// The ID a client got from one bridge process resumes it on the next one,
// started with the same flags after the first was stopped, though the
// messages published in between were never seen by any bridge.
func TestResumeAcrossBridgeRestart(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	route := "/orders=" + stream

	b1 := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	b1.WaitReadyz(200)
	c := connect(t, b1.URL("/orders"), "")
	c.syncLive(pub.publish)
	pub.publish(seq("m", 1, 5)...)
	c.expectData(seq("m", 1, 5)...)

	b1.Signal(syscall.SIGTERM)
	if rest := c.expectEnd(); len(rest) > 0 {
		t.Fatalf("events after m5 at shutdown: %+v", rest)
	}
	if code := b1.Wait(waitFor); code != 0 {
		t.Fatalf("first bridge exited with status %d", code)
	}
	id := c.lastEventID()

	pub.publish(seq("m", 6, 10)...) // no bridge runs

	b2 := startBridge(t, "-listen", "127.0.0.1:"+b1.Port(), "-route", route)
	b2.WaitReadyz(200)
	c2 := connect(t, b2.URL("/orders"), id)
	c2.expectData(seq("m", 6, 10)...)
	pub.publish(seq("m", 11, 15)...)
	c2.expectData(seq("m", 11, 15)...)
	c2.expectOnly("end", pub.publish)
}

// Two bridge instances with the same flags serve the same stream: a client
// that read from instance A resumes on instance B with A's last ID.
func TestResumeOnAnotherInstance(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	route := "/orders=" + stream
	a := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	a.WaitReadyz(200)
	b.WaitReadyz(200)

	c := connect(t, a.URL("/orders"), "")
	c.syncLive(pub.publish)
	pub.publish(seq("m", 1, 5)...)
	c.expectData(seq("m", 1, 5)...)
	c.close()
	pub.publish(seq("m", 6, 10)...)

	c2 := connect(t, b.URL("/orders"), c.lastEventID())
	c2.expectData(seq("m", 6, 10)...)
	pub.publish(seq("m", 11, 15)...)
	c2.expectData(seq("m", 11, 15)...)
	c2.expectOnly("end", pub.publish)

	// And back to A, which has served none of these to this client.
	c3 := connect(t, a.URL("/orders"), c2.lastEventID())
	pub.publish(seq("m", 16, 18)...)
	c3.expectData(seq("m", 16, 18)...)
	c3.expectOnly("end2", pub.publish)
}

// An ID from another route, or one that is not an ID at all, is not an
// error status (a browser would give up for good): the client gets 200, a
// gap event that names its ID, then the live stream.
func TestResumeWithForeignOrGarbageID(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pubA, streamA := ns.jetStream("ALPHA")
	pubB, streamB := ns.jetStream("BETA")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/a="+streamA, "-route", "/b="+streamB)
	b.WaitReadyz(200)

	ca := connect(t, b.URL("/a"), "")
	ca.syncLive(pubA.publish)
	pubA.publish("a1")
	ca.expectData("a1")
	idA := ca.lastEventID()

	cases := []struct {
		name, query, header, id string
	}{
		{name: "other-route-header", header: idA, id: idA},
		{name: "other-route-query", query: idA, id: idA},
		{name: "garbage-header", header: "not an ID!", id: "not an ID!"},
		{name: "garbage-query", query: "%%garbage", id: "%%garbage"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := b.URL("/b")
			if tc.query != "" {
				u += "?lastEventId=" + url.QueryEscape(tc.query)
			}
			c := connect(t, u, tc.header)
			gap := c.next()
			if gap.Type != "gap" {
				t.Fatalf("first event: type %q data %q, want a gap event", gap.Type, gap.Data)
			}
			var g struct {
				Reason      string `json:"reason"`
				LastEventID string `json:"lastEventId"`
				Missed      uint64 `json:"missed"`
			}
			if err := json.Unmarshal([]byte(gap.Data), &g); err != nil {
				t.Fatalf("gap data %q: %v", gap.Data, err)
			}
			if g.Reason == "" || g.LastEventID != tc.id {
				t.Errorf("gap data %q: want a reason and lastEventId %q", gap.Data, tc.id)
			}
			want := seq("b"+strconv.Itoa(i)+"-", 1, 3)
			pubB.publish(want...)
			c.expectData(want...)
			c.expectOnly("end-"+tc.name, pubB.publish)
		})
	}
}
