package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/poll"
)

// adminRE finds the admin port's address in the startup lines.
var adminRE = regexp.MustCompile(`msg="esbridge admin listening" addr=(\S+)`)

// adminURL returns the URL of path on the bridge's admin port.
func (p *proc) adminURL(path string) string {
	p.t.Helper()
	m := adminRE.FindStringSubmatch(p.Output())
	if m == nil {
		p.t.Fatalf("esbridge logged no admin address:\n%s", p.Output())
	}
	return "http://" + m[1] + path
}

// getURL does a plain GET of url and returns the status and body.
func getURL(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// scrape reads the bridge's /metrics: each sample's value by its name and
// labels, as the text format writes them (labels in order of name), e.g.
// `esbridge_clients{route="/orders"}`.
func (p *proc) scrape() map[string]float64 {
	p.t.Helper()
	code, body := getURL(p.t, p.adminURL("/metrics"))
	if code != http.StatusOK {
		p.t.Fatalf("/metrics: status %d: %s", code, body)
	}
	samples := make(map[string]float64)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			p.t.Fatalf("/metrics: line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

// waitMetric scrapes until the sample named key has a value that ok
// accepts (absent samples are -1), and returns the scrape.
func (p *proc) waitMetric(key, what string, ok func(float64) bool) map[string]float64 {
	p.t.Helper()
	var m map[string]float64
	var v float64
	if !poll.Wait(waitFor, func() bool {
		m = p.scrape()
		var found bool
		if v, found = m[key]; !found {
			v = -1
		}
		return ok(v)
	}) {
		p.t.Fatalf("%s is %v after %v, want %s", key, v, waitFor, what)
	}
	return m
}

func equals(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// The admin port serves the metrics, which move as a user expects: the
// clients, the events published and the bytes they received, a client
// caught up from the broker, a gap by its reason, the source up and then
// down, and the lag behind JetStream. The public /readyz then says only
// ready or not ready; the admin one names the route. /debug/pprof/ is on
// the admin port only.
func TestAdminMetrics(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-route", "/orders="+stream, "-backlog", "3")
	b.WaitReadyz(200)

	const (
		up        = `esbridge_source_up{route="/orders"}`
		clients   = `esbridge_clients{route="/orders"}`
		published = `esbridge_events_published_total{route="/orders"}`
		bytesSent = `esbridge_bytes_sent_total{route="/orders"}`
		catchUps  = `esbridge_catchups_total{route="/orders"}`
		malformed = `esbridge_gaps_total{reason="malformed-id",route="/orders"}`
		lag       = `esbridge_lag_messages{route="/orders"}`
	)
	m := b.scrape()
	for key, want := range map[string]float64{
		up: 1, clients: 0, bytesSent: 0, catchUps: 0,
		`esbridge_route_info{route="/orders",stream="jetstream/ORDERS"}`: 1,
		`esbridge_catchup_readers{route="/orders"}`:                      0,
		`esbridge_catchup_waiting{route="/orders"}`:                      0,
		`esbridge_connections_refused_total{reason="auth"}`:              0,
		`esbridge_connections_refused_total{reason="limit"}`:             0,
	} {
		if v, ok := m[key]; !ok || v != want {
			t.Errorf("%s = %v (exported: %v), want %v", key, v, ok, want)
		}
	}
	for _, key := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := m[key]; !ok {
			t.Errorf("no %s", key)
		}
	}

	// Public /readyz is terse, the admin one names the route; pprof and
	// the health check are on the admin port.
	if code, body := getURL(t, b.URL("/readyz")); code != 200 || body != "ready\n" {
		t.Errorf("public /readyz: %d %q, want 200 \"ready\\n\"", code, body)
	}
	if code, body := getURL(t, b.adminURL("/readyz")); code != 200 || body != "ready\n/orders jetstream/ORDERS ready\n" {
		t.Errorf("admin /readyz: %d %q, want 200 and the route, ready", code, body)
	}
	if code, _ := getURL(t, b.adminURL("/debug/pprof/")); code != 200 {
		t.Errorf("admin /debug/pprof/: %d, want 200", code)
	}
	if code, _ := getURL(t, b.URL("/debug/pprof/")); code != 404 {
		t.Errorf("public /debug/pprof/: %d, want 404", code)
	}
	if code, body := getURL(t, b.adminURL("/healthz")); code != 200 || body != "ok\n" {
		t.Errorf("admin /healthz: %d %q, want 200 ok", code, body)
	}

	// A client, and the events it receives.
	c := connect(t, b.URL("/orders"), "")
	c.syncLive(pub.publish)
	m = b.scrape()
	if m[clients] != 1 {
		t.Errorf("%s = %v with a client connected, want 1", clients, m[clients])
	}
	before := m[published]
	pub.publish(seq("m", 1, 10)...)
	c.expectData(seq("m", 1, 10)...)
	if m = b.scrape(); m[published]-before != 10 {
		t.Errorf("%s went from %v to %v after 10 messages, want +10", published, before, m[published])
	}
	// Every byte it received, and no more, for it is the only client so far.
	received := float64(len(c.body()))
	b.waitMetric(bytesSent, "the "+strconv.Itoa(int(received))+" bytes the client received", equals(received))
	b.waitMetric(lag, "0: the live reader has read every message", equals(0))
	b.waitMetric(`esbridge_partition_lag_messages{partition="0",route="/orders"}`, "0 in the stream's one partition", equals(0))
	b.waitMetric(`esbridge_partition_stalled_seconds{partition="0",route="/orders"}`, "0: the partition is read", equals(0))
	b.waitMetric(`esbridge_partition_last_read_timestamp_seconds{partition="0",route="/orders"}`, "a time", func(v float64) bool { return v > 1e9 })

	// A client resumes from an ID that has left the log of 3: it is caught
	// up from JetStream.
	id := c.lastEventID()
	c.close() // noticed at the next write to it
	caughtUp := b.scrape()[catchUps]
	pub.publish(seq("m", 11, 15)...)
	// Once the bridge has them, the ID has left its log.
	b.waitMetric(published, "the 15 messages", func(v float64) bool { return v >= before+15 })
	r := connect(t, b.URL("/orders"), id)
	r.expectData(seq("m", 11, 15)...)
	if m = b.scrape(); m[catchUps] < caughtUp+1 {
		t.Errorf("%s went from %v to %v after a resume from the broker, want at least +1", catchUps, caughtUp, m[catchUps])
	}

	// An ID that cannot be read gets a gap, counted by its reason.
	if _, ok := m[malformed]; ok {
		t.Errorf("%s exported before any such gap", malformed)
	}
	g := connect(t, b.URL("/orders"), "garbage")
	ev := g.next()
	var gap struct{ Reason string }
	if err := json.Unmarshal([]byte(ev.Data), &gap); err != nil || ev.Type != "gap" || gap.Reason != "malformed-id" {
		t.Fatalf("got %+v, want a malformed-id gap", ev)
	}
	if m = b.scrape(); m[malformed] != 1 {
		t.Errorf("%s = %v, want 1", malformed, m[malformed])
	}

	// The broker goes away: the source is down, no lag is told, and only
	// the admin /readyz names the route.
	ns.Stop()
	m = b.waitMetric(up, "0 while NATS is down", equals(0))
	if _, ok := m[lag]; ok {
		t.Errorf("%s = %v while the source is down, want none", lag, m[lag])
	}
	if code, body := getURL(t, b.URL("/readyz")); code != 503 || body != "not ready\n" {
		t.Errorf("public /readyz: %d %q, want 503 \"not ready\\n\"", code, body)
	}
	if code, body := getURL(t, b.adminURL("/readyz")); code != 503 || body != "not ready\n/orders jetstream/ORDERS not ready\n" {
		t.Errorf("admin /readyz: %d %q, want 503 naming the route", code, body)
	}
}

// The lag behind Kafka is exported, 0 once the live reader has read every
// partition's messages.
func TestAdminKafkaLag(t *testing.T) {
	t.Parallel()
	top := newKafkaTopic(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-route", top.route("/t", ""))
	b.WaitReadyz(200)
	c := connect(t, b.URL("/t"), "")
	top.produce(12, 1, 5) // 60 messages over the 6 partitions
	newKeyed(t, 12, 1).readUntil(c, 5)
	m := b.waitMetric(`esbridge_lag_messages{route="/t"}`, "0", equals(0))
	if v := m[`esbridge_events_published_total{route="/t"}`]; v < 60 {
		t.Errorf("%v events published, want at least the 60 messages", v)
	}
}

// A bad -admin-listen stops the program with a line naming the flag; so
// does an admin port that is the public one.
func TestAdminListenFlag(t *testing.T) {
	t.Parallel()
	valid := "/a=jetstream://127.0.0.1:" + freePort(t) + "/S"
	port := freePort(t)
	for _, args := range [][]string{
		{"-route", valid, "-admin-listen", "bad:addr:x"},
		{"-route", valid, "-listen", "127.0.0.1:" + port, "-admin-listen", "127.0.0.1:" + port},
	} {
		p := startProc(t, binary(t), args...)
		if code := p.Wait(waitFor); code != 2 {
			t.Errorf("%v: exit status %d, want 2", args, code)
		}
		lines := scanLines(p.Output())
		if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "esbridge: invalid value") || !strings.Contains(lines[len(lines)-1], "for flag -admin-listen") {
			t.Errorf("%v: stderr %q, want a last line naming -admin-listen", args, p.Output())
		}
	}
}

// refused counts by reason, auth and limit from 0, anything else as
// "other"; on a nil *metrics it does nothing.
func TestRefused(t *testing.T) {
	b, err := bridge.New(bridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(b)
	count := func() map[string]float64 {
		mfs, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "esbridge_connections_refused_total" {
				continue
			}
			for _, s := range mf.GetMetric() {
				n[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
			}
		}
		return n
	}
	if got := count(); !maps.Equal(got, map[string]float64{"auth": 0, "limit": 0}) {
		t.Errorf("before any refusal: %v, want auth and limit at 0", got)
	}
	m.refused(refusedAuth)
	m.refused(refusedLimit)
	m.refused(refusedLimit)
	m.refused("no such reason")
	if got := count(); !maps.Equal(got, map[string]float64{"auth": 1, "limit": 2, "other": 1}) {
		t.Errorf("refusals counted %v, want auth 1, limit 2, other 1", got)
	}
	var none *metrics
	none.refused(refusedAuth) // no admin port, no panic
}
