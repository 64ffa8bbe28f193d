package main

import (
	"encoding/json"
	"net/url"
	"strconv"
	"testing"
)

// start=earliest: a client without an ID gets the whole stream, the
// messages published before the bridge started included, then the live
// ones; a client with an ID still resumes after it.
func TestStartEarliest(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	pub.publish(seq("m", 1, 5)...)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/orders="+stream+"?start=earliest")
	b.WaitReadyz(200)

	c := connect(t, b.URL("/orders"), "")
	c.expectData(seq("m", 1, 5)...)
	pub.publish(seq("m", 6, 8)...)
	c.expectData(seq("m", 6, 8)...)
	c.close()

	pub.publish("m9")
	c2 := connect(t, b.URL("/orders"), c.lastEventID())
	c2.expectData("m9")
	c2.expectOnly("end", pub.publish)
}

// A JetStream route filtered to one subject serves that subject's messages
// only, typed by subject with type=subject, and resumes by stream sequence
// across the messages it does not serve.
func TestFilteredRoute(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	eu, stream := ns.jetStream("ORDERS")
	us := &publisher{t: t, js: eu.js, subject: "orders.us"}
	eu.subject = "orders.eu"
	route := "/eu=" + stream + "?subject=" + url.QueryEscape("orders.eu") + "&type=subject"
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", route)
	b.WaitReadyz(200)

	// A route with type=subject dispatches events by subject.
	c := connect(t, b.URL("/eu"), "")
	c.wantType = "orders.eu"
	c.syncLive(eu.publish)
	for i := range 3 {
		us.publish("us" + strconv.Itoa(i+1))
		eu.publish("eu" + strconv.Itoa(i+1))
	}
	c.expectData("eu1", "eu2", "eu3")
	c.close()
	us.publish("us4", "us5")
	eu.publish("eu4")
	us.publish("us6")
	eu.publish("eu5")

	c2 := connect(t, b.URL("/eu"), c.lastEventID())
	c2.wantType = "orders.eu"
	c2.expectData("eu4", "eu5")
	c2.expectOnly("end", eu.publish)
}

// format=envelope: the data is a JSON object with the payload, the subject
// and the stream sequence, which goes up by one per message.
func TestEnvelopeFormat(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/orders="+stream+"?format=envelope&start=earliest")
	b.WaitReadyz(200)
	c := connect(t, b.URL("/orders"), "")
	pub.publish(`{"order":1}`, "plain text")
	var prev uint64
	for i, want := range []string{`{"order":1}`, "plain text"} {
		ev := c.next()
		var env struct {
			Subject  string  `json:"subject"`
			Sequence uint64  `json:"sequence"`
			Data     *string `json:"data"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &env); err != nil {
			t.Fatalf("event %d: data %q: %v", i, ev.Data, err)
		}
		if env.Subject != pub.subject || env.Data == nil || *env.Data != want || (i > 0 && env.Sequence != prev+1) {
			t.Errorf("event %d: %s: want subject %s, data %q, sequence %d", i, ev.Data, pub.subject, want, prev+1)
		}
		prev = env.Sequence
	}
}
