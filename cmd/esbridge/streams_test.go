package main

import (
	"slices"
	"strings"
	"syscall"
	"testing"
)

// expectRoutes reads from c, a merged stream, the messages of want (route
// path -> its messages in order), in any interleaving of the routes, and
// fails on anything else.
func (c *sseClient) expectRoutes(want map[string][]string) {
	c.t.Helper()
	got := map[string][]string{}
	n := 0
	for _, w := range want {
		n += len(w)
	}
	for range n {
		ev := c.next()
		if _, ok := want[ev.Type]; !ok {
			c.t.Fatalf("%s: got type %q data %q, want a message of %v; received:\n%s", c.url, ev.Type, ev.Data, want, c.body())
		}
		got[ev.Type] = append(got[ev.Type], ev.Data)
	}
	for r, w := range want {
		if !slices.Equal(got[r], w) {
			c.t.Fatalf("%s: route %s: got %q, want %q", c.url, r, got[r], w)
		}
	}
}

// expectNothingMore publishes a marker on each route and checks that the
// markers are the next events: nothing else was on its way.
func (c *sseClient) expectNothingMore(marker string, pubs map[string]*publisher) {
	c.t.Helper()
	want := map[string][]string{}
	for r, p := range pubs {
		p.publish(marker)
		want[r] = []string{marker}
	}
	c.expectRoutes(want)
}

// One connection streams two JetStream routes merged. The bridge is killed
// and started again while both routes go on: the client resumes with its
// merged ID, every message of each route once, in order. A second
// instance resumes it from the ID the first gave, and back again.
func TestStreamsResumeAcrossRestartAndInstances(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	orders, ordersURL := ns.jetStream("ORDERS")
	payments, paymentsURL := ns.jetStream("PAYMENTS")
	pubs := map[string]*publisher{"/orders": orders, "/payments": payments}
	args := []string{"-route", "/orders=" + ordersURL, "-route", "/payments=" + paymentsURL, "-backlog", "4"}

	b1 := startBridge(t, append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	b1.WaitReadyz(200)
	c := connect(t, b1.URL("/_streams?route=/orders&route=/payments"), "")
	orders.publish(seq("o", 1, 5)...)
	payments.publish(seq("p", 1, 3)...)
	c.expectRoutes(map[string][]string{"/orders": seq("o", 1, 5), "/payments": seq("p", 1, 3)})

	b1.Signal(syscall.SIGKILL)
	b1.Wait(waitFor)
	id := c.lastEventID()
	if id == "" {
		t.Fatal("no merged event ID")
	}
	orders.publish(seq("o", 6, 12)...) // no bridge runs
	payments.publish(seq("p", 4, 6)...)

	b2 := startBridge(t, append([]string{"-listen", "127.0.0.1:" + b1.Port()}, args...)...)
	b2.WaitReadyz(200)
	// The routes in another order: the ID's parts go by path.
	c2 := connect(t, b2.URL("/_streams?route=/payments&route=/orders"), id)
	c2.expectRoutes(map[string][]string{"/orders": seq("o", 6, 12), "/payments": seq("p", 4, 6)})
	payments.publish(seq("p", 7, 9)...)
	c2.expectRoutes(map[string][]string{"/payments": seq("p", 7, 9)})
	c2.expectNothingMore("end1", pubs)

	// A second instance, from the ID the first gave.
	other := startBridge(t, append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	other.WaitReadyz(200)
	id2 := c2.lastEventID()
	c2.close()
	orders.publish(seq("o", 13, 15)...)
	c3 := connect(t, other.URL("/_streams?route=/orders&route=/payments"), id2)
	c3.expectRoutes(map[string][]string{"/orders": seq("o", 13, 15)})
	payments.publish(seq("p", 10, 11)...)
	c3.expectRoutes(map[string][]string{"/payments": seq("p", 10, 11)})
	c3.expectNothingMore("end2", pubs)

	// And back to the restarted one, with ?lastEventId= as a page would.
	c4 := connect(t, b2.URL("/_streams?route=/orders&route=/payments&lastEventId="+c3.lastEventID()), "")
	orders.publish("o16")
	c4.expectRoutes(map[string][]string{"/orders": {"o16"}})
	c4.expectNothingMore("end3", pubs)
}

// A path esbridge keeps for itself cannot be a route: the flag error says so.
func TestReservedRoutePath(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/_streams", "/_x", "/readyz"} {
		p := startProc(t, binary(t), "-listen", "127.0.0.1:0", "-route", path+"=jetstream://127.0.0.1:4222/S")
		if code := p.Wait(waitFor); code != 2 {
			t.Fatalf("%s: exit status %d, want 2", path, code)
		}
		want := `invalid value "` + path + `=jetstream://127.0.0.1:4222/S" for flag -route: the path ` + path + ` is reserved for esbridge`
		if s := p.Output(); !strings.Contains(s, want) {
			t.Errorf("%s: stderr %q, want %q", path, s, want)
		}
	}
}
