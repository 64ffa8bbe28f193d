// This file holds the clients of scenario T (see soak.go) and their exact
// check: each client keeps, per route it reads and per lane of its view
// of the route, the last message g it received, and every event must be
// the next one of its lane.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The kinds of soak clients, taken in turn as clients join.
var soakKinds = []string{"plain", "slow", "resume", "filter", "since", "merged"}

// soakCounts are a client's counts, summed per kind for the report.
type soakCounts struct {
	Clients  int    `json:"clients"`
	Conns    uint64 `json:"connections"`    // responses with status 200
	Drops    uint64 `json:"drops"`          // connections the client dropped to resume
	Ended    uint64 `json:"endedByServer"`  // streams the server ended (drain, restart)
	Refused  uint64 `json:"refused"`        // connection attempts that failed (esbridge down)
	Events   uint64 `json:"events"`         // messages received
	Gaps     uint64 `json:"legitimateGaps"` // gap events where legitimate (core NATS)
	Outage   uint64 `json:"outageGaps"`     // since-failed, history: a broker that cannot answer
	Lost     uint64 `json:"lostAtGaps"`     // messages skipped at those gaps
	BrokerDu uint64 `json:"brokerDuplicates"`

	// Failures.
	Dup       uint64 `json:"duplicates"`
	Skipped   uint64 `json:"skipped"` // messages jumped over without a gap
	Mismatch  uint64 `json:"filterMismatches"`
	Start     uint64 `json:"startErrors"` // a first message later (or, with since, earlier) than due
	Tail      uint64 `json:"tailMissing"` // clients at the end that lack the last messages
	BadGap    uint64 `json:"illegitimateGaps"`
	Malformed uint64 `json:"malformed"`
	Status    uint64 `json:"badStatus"`

	// Not failures.
	BrokerLost uint64 `json:"brokerLost"` // messages lacking that the broker lacks too
	NotReady   uint64 `json:"openedNotReady"`
	GapAtEnd   uint64 `json:"gapAtEnd"` // a gap with nothing after it, at the end
}

func (c *soakCounts) add(o soakCounts) {
	c.Clients += o.Clients
	c.Conns += o.Conns
	c.Drops += o.Drops
	c.Ended += o.Ended
	c.Refused += o.Refused
	c.Events += o.Events
	c.Gaps += o.Gaps
	c.Outage += o.Outage
	c.Lost += o.Lost
	c.BrokerDu += o.BrokerDu
	c.Dup += o.Dup
	c.Skipped += o.Skipped
	c.Mismatch += o.Mismatch
	c.Start += o.Start
	c.Tail += o.Tail
	c.BadGap += o.BadGap
	c.Malformed += o.Malformed
	c.Status += o.Status
	c.BrokerLost += o.BrokerLost
	c.NotReady += o.NotReady
	c.GapAtEnd += o.GapAtEnd
}

// A soakView is a client's view of one route: one lane of step 1 for a
// route in one order, a lane per Kafka key, or the one lane its filter
// asks for.
type soakView struct {
	r         *soakRoute
	fixedLane int    // the filter's lane, or -1
	step      uint64 // between successive g of a lane of the view
	last      []uint64
	gapFrom   []uint64 // last before a gap, while rebased
	rebased   []bool   // a gap came; the next g starts the lane again
	start     uint64   // r.issued when the stream opened without an ID
	notReady  bool     // esbridge was not ready then
	since     time.Time
}

func newView(r *soakRoute, lane int, since time.Time) *soakView {
	v := &soakView{r: r, fixedLane: lane, step: 1, since: since}
	n := 1
	switch {
	case lane >= 0:
		v.step = uint64(r.lanes)
	case !r.ordered:
		v.step, n = uint64(r.lanes), r.lanes
	}
	v.last, v.gapFrom, v.rebased = make([]uint64, n), make([]uint64, n), make([]bool, n)
	return v
}

// laneOf is g's lane in the view.
func (v *soakView) laneOf(g uint64) int {
	if len(v.last) == 1 {
		return 0
	}
	return v.r.lane(g)
}

// routeLane is the route's lane of the view's lane li, or -1 for all.
func (v *soakView) routeLane(li int) int {
	switch {
	case v.fixedLane >= 0:
		return v.fixedLane
	case len(v.last) > 1:
		return li
	}
	return -1
}

// firstAfter is the first g after s in the view's lane li.
func (v *soakView) firstAfter(li int, s uint64) uint64 {
	rl := v.routeLane(li)
	if rl < 0 {
		return s + 1
	}
	L := uint64(v.r.lanes)
	return s + 1 + (uint64(rl)+L-s%L)%L
}

// lastUpTo is the last g up to a in the view's lane li, or 0.
func (v *soakView) lastUpTo(li int, a uint64) uint64 {
	rl := v.routeLane(li)
	if rl < 0 {
		return a
	}
	if a < uint64(rl)+1 {
		return 0
	}
	return a - (a-1-uint64(rl))%uint64(v.r.lanes)
}

// A soakClient is one simulated browser.
type soakClient struct {
	id        int
	kind      string
	path      string // with the query of the first request
	views     map[string]*soakView
	merged    bool
	slow      time.Duration // pause after each event while not final
	dropEvery time.Duration // 0: never drops by itself
	addr      string
	fast      bool         // a slow client's pauses are over
	final     *atomic.Bool // the run is ending: no more pauses
	ready     *atomic.Bool // esbridge's /readyz, polled
	fail      func(string) // records a failure's description
	// failRange records messages from to to (every step) that the client
	// lacks; they are a failure unless the broker lacks them too, which
	// the end of the run finds out.
	failRange func(soakRangeFail)

	mu     sync.Mutex
	lastID string
	n      soakCounts
}

// A soakRangeFail is a stretch of messages a client lacks.
type soakRangeFail struct {
	kind, what string // the client's kind; "skipped" or "start"
	r          *soakRoute
	from, to   uint64
	step       uint64
	desc       string
}

func (c *soakClient) rangef(what string, v *soakView, from, to uint64, format string, args ...any) {
	c.failRange(soakRangeFail{kind: c.kind, what: what, r: v.r, from: from, to: to, step: v.step,
		desc: fmt.Sprintf("client %d (%s %s): %s", c.id, c.kind, c.path, fmt.Sprintf(format, args...))})
}

func (c *soakClient) failf(format string, args ...any) {
	c.fail(fmt.Sprintf("client %d (%s %s): %s", c.id, c.kind, c.path, fmt.Sprintf(format, args...)))
}

// run reads the stream, resuming with the last ID it received after every
// end of a connection, until ctx ends.
func (c *soakClient) run(ctx context.Context) soakCounts {
	for ctx.Err() == nil {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if c.dropEvery > 0 {
			d := c.dropEvery/2 + rand.N(c.dropEvery)
			cctx, cancel = context.WithTimeout(ctx, d)
		}
		c.mu.Lock()
		var header []string
		if c.lastID != "" {
			header = []string{"Last-Event-ID: " + c.lastID}
		}
		c.mu.Unlock()
		opened := false
		var conn net.Conn
		err := readSSE(cctx, c.addr, c.path, header, 256<<10, func(nc net.Conn) {
			opened, conn = true, nc
			c.opened(nc)
		}, func(ev *sseEvent) bool {
			c.event(ev)
			if c.slow > 0 && !c.fast {
				if !c.final.Load() {
					time.Sleep(c.slow)
				} else if tc, ok := conn.(*net.TCPConn); ok {
					// The run is ending: read as fast as a plain client.
					_ = tc.SetReadBuffer(4 << 20)
					c.fast = true
				}
			}
			return true
		})
		dropped := cctx.Err() != nil && ctx.Err() == nil
		cancel()
		c.mu.Lock()
		switch {
		case ctx.Err() != nil:
		case dropped:
			c.n.Drops++
		case !opened && err != nil && strings.HasPrefix(err.Error(), "status "):
			c.n.Status++
			c.mu.Unlock()
			c.failf("%v", err)
			c.mu.Lock()
		case !opened:
			c.n.Refused++
		default:
			c.n.Ended++
		}
		c.mu.Unlock()
		if !opened && !dropped {
			select { // esbridge is down or restarting
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// opened is called when a stream's response headers are in. A stream
// opened without an ID starts at the routes' heads: every message whose
// publication begins after this is due.
func (c *soakClient) opened(nc net.Conn) {
	if c.slow > 0 && !c.fast {
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n.Conns++
	if c.lastID != "" {
		return
	}
	for _, v := range c.views {
		v.start, v.notReady = v.r.issued.Load(), !c.ready.Load()
		clear(v.last)
		clear(v.rebased)
	}
}

// event checks one event.
func (c *soakClient) event(ev *sseEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.hasID {
		c.lastID = string(ev.id)
	}
	typ := string(ev.typ)
	var v *soakView
	if c.merged {
		if typ == "" {
			return // the ID frame
		}
		p, t, _ := strings.Cut(typ, ":")
		v, typ = c.views[strings.TrimPrefix(p, "/")], t
		if v == nil {
			c.n.Malformed++
			c.failf("event of type %q", ev.typ)
			return
		}
	} else {
		for _, only := range c.views {
			v = only
		}
	}
	if typ == "gap" {
		c.gap(v, ev.data)
		return
	}
	if ev.data == nil {
		return // a progress frame
	}
	name, rest, _ := strings.Cut(string(ev.data), " ")
	gs, _, _ := strings.Cut(rest, " ")
	g, err := strconv.ParseUint(gs, 10, 64)
	if err != nil || name != v.r.name || g == 0 {
		c.n.Malformed++
		c.failf("on %s, data %.40q", v.r.path(), ev.data)
		return
	}
	c.n.Events++
	c.check(v, g)
}

// legitGaps are the gap reasons of a route without history.
var legitGaps = map[string]bool{"unknown-id": true, "slow": true, "source-reconnected": true, "messages-lost": true}

// outageGaps are the gap reasons of a broker that cannot answer, on any
// route: the stream goes on live.
var outageGaps = map[string]bool{"since-failed": true, "history": true}

func (c *soakClient) gap(v *soakView, data []byte) {
	var g struct {
		Reason string
		Missed uint64
	}
	_ = json.Unmarshal(data, &g)
	switch {
	case !v.r.history && legitGaps[g.Reason]:
		c.n.Gaps++
		c.n.Lost += g.Missed
	case outageGaps[g.Reason]:
		c.n.Outage++
	default:
		c.n.BadGap++
		c.failf("gap on %s: %.200s", v.r.path(), data)
	}
	for i := range v.last {
		if !v.rebased[i] {
			v.gapFrom[i] = v.last[i]
		}
		if g.Missed > 0 {
			v.gapFrom[i] = 0 // counted
		}
		v.last[i], v.rebased[i] = 0, true
	}
}

func (c *soakClient) check(v *soakView, g uint64) {
	r := v.r
	if v.fixedLane >= 0 && r.lane(g) != v.fixedLane {
		c.n.Mismatch++
		c.failf("%s message %d is not of lane %d", r.path(), g, v.fixedLane)
		return
	}
	li := v.laneOf(g)
	last := v.last[li]
	switch {
	case last == 0 && v.rebased[li]:
		if from := v.gapFrom[li]; from > 0 {
			if g <= from {
				c.n.Dup++
				c.failf("%s message %d after a gap at %d", r.path(), g, from)
			} else {
				c.n.Lost += (g-from)/v.step - 1
			}
		}
		v.rebased[li] = false
	case last == 0:
		c.startCheck(v, li, g)
	case g == last+v.step:
	case g == last && r.isUncertain(g):
		c.n.BrokerDu++
		return
	case g <= last:
		c.n.Dup++
		c.failf("%s message %d after %d", r.path(), g, last)
		return
	default:
		c.rangef("skipped", v, last+v.step, g-v.step, "%s message %d after %d, no gap", r.path(), g, last)
	}
	v.last[li] = g
}

// startCheck checks the first message g of a lane of the view: nothing
// published since the stream opened is missing, and with since, it is
// the first one published at since or later (within the brokers' time
// granularity).
func (c *soakClient) startCheck(v *soakView, li int, g uint64) {
	r := v.r
	if due := v.firstAfter(li, v.start); g > due {
		if v.notReady {
			c.n.NotReady++
			return
		}
		c.rangef("start", v, due, g-v.step, "%s begins at %d: %d to %d missing (opened at %d)", r.path(), g, due, g-v.step, v.start)
		return
	}
	if v.since.IsZero() {
		return
	}
	if prev := g - min(g, v.step); prev > 0 && r.pubTime(prev).After(v.since.Add(time.Second)) {
		c.n.Start++
		c.failf("%s since %s begins at %d, but %d was published at %s", r.path(), v.since.Format("15:04:05.000"), g, prev, r.pubTime(prev).Format("15:04:05.000"))
	} else if t := r.ackTime(g); !t.IsZero() && t.Before(v.since.Add(-3*time.Second)) {
		c.n.Start++
		c.failf("%s since %s begins at %d, published by %s", r.path(), v.since.Format("15:04:05.000"), g, t.Format("15:04:05.000"))
	}
}

// behind returns how many messages up to acked (per route) the client
// lacks, counting only what is due since its stream opened.
func (c *soakClient) behind(acked map[string]uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	for name, v := range c.views {
		for li, last := range v.last {
			f := v.lastUpTo(li, acked[name])
			if f > v.start && last < f && !v.rebased[li] {
				n += (f - last) / v.step
			}
		}
	}
	return n
}

// tail records a failure if the client lacks messages up to acked. A
// lane whose last event was a gap is not checked: the gap told where it
// goes on, and nothing came after.
func (c *soakClient) tail(acked map[string]uint64) {
	c.mu.Lock()
	for _, v := range c.views {
		for li := range v.last {
			if v.rebased[li] {
				c.n.GapAtEnd++
			}
		}
	}
	c.mu.Unlock()
	if n := c.behind(acked); n > 0 {
		c.mu.Lock()
		c.n.Tail++
		c.mu.Unlock()
		c.failf("at the end, %d messages missing", n)
	}
}

// newSoakClient makes the i-th client: its kind, route and filter.
func newSoakClient(i int, routes []*soakRoute, addr string, rate int, final, ready *atomic.Bool, fail func(string), failRange func(soakRangeFail)) *soakClient {
	c := &soakClient{id: i, kind: soakKinds[i%len(soakKinds)], views: map[string]*soakView{}, addr: addr,
		final: final, ready: ready, fail: fail, failRange: failRange}
	eligible := routes
	pick := func(keep func(*soakRoute) bool) {
		eligible = nil
		for _, r := range routes {
			if keep(r) {
				eligible = append(eligible, r)
			}
		}
	}
	switch c.kind {
	case "filter":
		pick(func(r *soakRoute) bool { return r.filter != nil })
	case "since":
		pick(func(r *soakRoute) bool { return r.since })
	}
	r := eligible[(i/len(soakKinds))%len(eligible)]
	switch c.kind {
	case "plain":
	case "slow":
		c.slow = 4 * time.Second / time.Duration(max(rate, 1)) // a quarter of the rate
	case "resume":
		c.dropEvery = 10 * time.Second
	case "filter":
		lane := rand.IntN(r.lanes)
		c.views[r.name] = newView(r, lane, time.Time{})
		c.path = r.path() + "?" + r.filter(lane)
		c.dropEvery = 30 * time.Second
	case "since":
		since := time.Now().Add(-30 * time.Second)
		c.views[r.name] = newView(r, -1, since)
		c.path = fmt.Sprintf("%s?since=%d", r.path(), since.UnixMilli())
		c.dropEvery = 30 * time.Second
	case "merged":
		q := url.Values{}
		for _, mr := range routes {
			lane, p := -1, mr.path()
			if !mr.ordered && mr.filter != nil { // Kafka: one key
				lane = rand.IntN(mr.lanes)
				p += "?" + mr.filter(lane)
			}
			q.Add("route", p)
			c.views[mr.name] = newView(mr, lane, time.Time{})
		}
		c.merged, c.path = true, "/_streams?"+q.Encode()
		c.dropEvery = 30 * time.Second
	}
	if len(c.views) == 0 {
		c.views[r.name] = newView(r, -1, time.Time{})
		c.path = r.path()
	}
	return c
}
