package main

import (
	"net/http"
	"strings"
	"testing"
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
	b.waitReadyz(200)

	for _, tc := range []struct{ path, reason string }{
		{"/orders?subject=payments.>", "not within the route's subject orders.>"},
		{"/orders?subject=orders..x", "empty token"},
		{"/orders?key=k1", "no keys"},
		{"/orders?type=" + strings.Repeat("t", 300), "longer than 256 bytes"},
	} {
		code, body, _ := b.get(tc.path)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.reason) {
			t.Errorf("GET %.60s: %d %q, want 400 saying %q", tc.path, code, body, tc.reason)
		}
		if len(body) > 300 {
			t.Errorf("GET %.60s: a reason of %d bytes", tc.path, len(body))
		}
	}

	// Each client's sync markers go on a subject the other one skips.
	eu := connect(t, b.url("/orders?subject=orders.eu.*"), "")
	typed := connect(t, b.url("/typed?type=orders.us.sync&type=orders.eu.paid"), "")
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
