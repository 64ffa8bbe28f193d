package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestFilters: a JetStream route serves clients the subjects they ask for
// within its subject, and the event types they ask for; a filter outside
// what the route allows gets 400 and a short reason, which stops a browser
// for good (a wrong URL is the page's bug).
func TestFilters(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS") // subjects orders.>
	b := startBridge(t, "-listen", "127.0.0.1:0",
		"-route", "/orders="+stream+"?subject=orders.>",
		"-route", "/typed="+stream+"?type=subject")
	b.WaitReadyz(200)

	for _, tc := range []struct{ path, reason string }{
		{"/orders?subject=payments.>", "not within the route's subject orders.>"},
		{"/orders?subject=orders..x", "empty token"},
		{"/orders?key=k1", "no keys"},
		{"/orders?type=" + strings.Repeat("t", 300), "longer than 256 bytes"},
	} {
		code, body, _ := b.Get(tc.path)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.reason) {
			t.Errorf("GET %.60s: %d %q, want 400 saying %q", tc.path, code, body, tc.reason)
		}
		if len(body) > 300 {
			t.Errorf("GET %.60s: a reason of %d bytes", tc.path, len(body))
		}
	}

	// Each client's sync markers go on a subject the other one skips.
	eu := connect(t, b.URL("/orders?subject=orders.eu.*"), "")
	typed := connect(t, b.URL("/typed?type=orders.us.sync&type=orders.eu.paid"), "")
	pub.subject = "orders.eu.sync"
	eu.syncLive(pub.publish)
	pub.subject, typed.wantType = "orders.us.sync", "orders.us.sync"
	typed.syncLive(pub.publish)
	pub.subject = "orders.us.paid"
	pub.publish("us1")
	pub.subject, typed.wantType = "orders.eu.paid", "orders.eu.paid"
	pub.publish("eu1")
	eu.expectData("eu1")
	typed.expectData("eu1")
}

// TestKafkaKeyFilter: against the real broker, a client with ?key= gets
// exactly its keys' messages, each key in order, live and, after a
// reconnection with its last event ID, replayed from the broker (the log
// of 16 no longer holds it) with the messages produced while it was away.
func TestKafkaKeyFilter(t *testing.T) {
	t.Parallel()
	const keys = 12
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-backlog", "16", "-route", top.route("/t", ""))
	b.WaitReadyz(200)
	code, body, _ := b.Get("/t?subject=orders.>")
	if code != http.StatusBadRequest || !strings.Contains(body, "no NATS subjects") {
		t.Errorf("?subject= on a Kafka route: %d %q, want 400", code, body)
	}

	want := func(from, to int) []string {
		var w []string
		for n := from; n <= to; n++ {
			w = append(w, fmt.Sprintf("k3-%d", n), fmt.Sprintf("k7-%d", n))
		}
		return w
	}
	c := connect(t, b.URL("/t?key=k3&key=k7"), "")
	top.produce(keys, 1, 30)
	readKeys(c, want(1, 30))
	c.close()
	top.produce(keys, 31, 40) // while the client is away
	c = connect(t, b.URL("/t?key=k3&key=k7"), c.lastEventID())
	readKeys(c, want(31, 40))
}

// readKeys reads len(want) events and checks that they are want's, in
// each key's order (keys lie in different partitions).
func readKeys(c *sseClient, want []string) {
	c.t.Helper()
	got := map[string][]string{}
	for range want {
		ev := c.next()
		key, _, _ := strings.Cut(ev.Data, "-")
		got[key] = append(got[key], ev.Data)
	}
	wantBy := map[string][]string{}
	for _, w := range want {
		key, _, _ := strings.Cut(w, "-")
		wantBy[key] = append(wantBy[key], w)
	}
	if fmt.Sprint(got) != fmt.Sprint(wantBy) {
		c.t.Fatalf("%s: got %v, want %v", c.url, got, wantBy)
	}
}

// TestSubjectOutsideStream: a ?subject= that no subject of the JetStream
// stream can match gets 400, on a route read whole and on one with a
// subject of its own, rather than a stream of nothing for ever; one that
// some subject of the stream can match is served, wildcards on either
// side.
func TestSubjectOutsideStream(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	js, err := jetstream.New(ns.conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SUBJ", Subjects: []string{"orders.eu.>", "audit.*"}}); err != nil {
		t.Fatal(err)
	}
	stream := "jetstream://" + ns.Addr() + "/SUBJ"
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/all="+stream, "-route", "/orders="+stream+"?subject=orders.>")
	b.WaitReadyz(200)

	for _, tc := range []struct {
		path   string
		status int
		reason string
	}{
		{"/all?subject=orders.eu.new", 200, ""},
		{"/all?subject=orders.>", 200, ""},
		{"/all?subject=audit.payments", 200, ""},
		{"/all?subject=*.payments", 200, ""},
		{"/all?subject=*.*.new", 200, ""},
		{"/all?subject=>", 200, ""},
		{"/all?subject=orders.us.new", 400, "subject=\"orders.us.new\" matches no subject of the stream (orders.eu.>, audit.*)"},
		{"/all?subject=payments.new", 400, "matches no subject of the stream"},
		{"/all?subject=*", 400, "matches no subject of the stream"},
		{"/all?subject=audit.x.y", 400, "matches no subject of the stream"},
		{"/orders?subject=orders.eu.new", 200, ""},
		{"/orders?subject=orders.*.new", 200, ""},
		{"/orders?subject=orders.us.new", 400, "matches no subject of the stream"},
		{"/orders?subject=audit.x", 400, "not within the route's subject orders.>"},
		{"/_streams?route=" + url.QueryEscape("/all?subject=payments.new"), 400, "matches no subject of the stream"},
	} {
		code, _, body := b.getWith(tc.path, nil)
		if code != tc.status || !strings.Contains(body, tc.reason) {
			t.Errorf("GET %s: %d %q, want %d saying %q", tc.path, code, body, tc.status, tc.reason)
		}
	}

	// The subjects served do stream their messages.
	audit := connect(t, b.URL("/all?subject=*.payments"), "")
	eu := connect(t, b.URL("/orders?subject=orders.eu.*"), "")
	pub := &publisher{t: t, js: js, subject: "audit.payments"}
	audit.syncLive(pub.publish)
	pub.subject = "orders.eu.sync"
	eu.syncLive(pub.publish)
	pub.subject = "orders.eu.paid"
	pub.publish("eu1")
	pub.subject = "audit.payments"
	pub.publish("audit1")
	eu.expectData("eu1")
	audit.expectData("audit1")
}
