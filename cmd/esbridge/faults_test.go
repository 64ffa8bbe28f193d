package main

// Network faults between esbridge and its brokers (issue 20): a toxiproxy,
// run in this process, stands between the bridge and the broker, while
// the tests publish to the broker directly. The tests run the program,
// as a user does, so that they see what a user checks: the events of
// clients that stay connected and of clients that resume, /readyz, the
// admin port's goroutine count, the broker's consumers and the bridge's
// TCP connections.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/ssetest"
)

// The bounds that TestBrokerFaults asserts, generously (docs/operations.md
// states them, docs/performance.md the times measured).
const (
	// noticeBound bounds how long a dead connection to the broker (reset,
	// refused, or hanging without a byte) goes unnoticed: the NATS
	// client's pings and RabbitMQ's heartbeats find a hanging one dead
	// within 15 s.
	noticeBound = 30 * time.Second
	// recoverBound bounds how long the bridge takes, once the network is
	// whole again, to be ready and to deliver what is published: within
	// 10 s (RabbitMQ redials at most 5 s apart, NATS every second).
	recoverBound = 30 * time.Second
	// settleBound bounds how long, after recovering, the bridge and the
	// broker take to drop what the fault left behind: goroutines,
	// consumers (JetStream deletes an abandoned one after 10 s),
	// connections.
	settleBound = 30 * time.Second
)

// goroutineSlack is how many goroutines more than before the fault the
// bridge may run once it has settled, with the same clients: a few of the
// runtime's and net/http's come and go.
const goroutineSlack = 3

// partitionEnv names the variable that sets how long the partition of
// TestBrokerFaults lasts (a Go duration, 5s if unset);
// docs/performance.md reports a run with 60s.
const partitionEnv = "FAULT_PARTITION"

// A fault is something that happens to the network between the bridge
// and its broker, through a faultProxy.
type fault struct {
	name string
	// down: the broker is unreachable while the fault lasts, so /readyz
	// must turn 503, and a live-only route must send a gap for what it
	// lost. Otherwise /readyz stays 200 and no event is lost.
	down bool
	// hold is how long the fault lasts: from when the bridge noticed it
	// if it is down, else from its start.
	hold  time.Duration
	apply func(*faultProxy)
}

// faults returns the faults of TestBrokerFaults, partition lasting
// partition.
func faults(partition time.Duration) []fault {
	return []fault{
		{name: "latency", hold: 3 * time.Second, apply: func(fp *faultProxy) {
			// 500 ms each way: a round trip takes a second more.
			fp.toxic("latency", "upstream", `{"latency": 500}`)
			fp.toxic("latency", "downstream", `{"latency": 500}`)
		}},
		{name: "trickle", hold: 3 * time.Second, apply: func(fp *faultProxy) {
			// 1 KB/s from the broker: less than what is published.
			fp.toxic("bandwidth", "downstream", `{"rate": 1}`)
		}},
		{name: "hang", down: true, hold: time.Second, apply: func(fp *faultProxy) {
			// Every byte dropped, both ways, and no connection closed:
			// a peer that vanished without a word.
			fp.toxic("timeout", "upstream", `{"timeout": 0}`)
			fp.toxic("timeout", "downstream", `{"timeout": 0}`)
		}},
		{name: "reset", down: true, hold: 3 * time.Second, apply: func(fp *faultProxy) {
			// Every connection reset (RST) at its next byte, new ones
			// too.
			fp.toxic("reset_peer", "upstream", `{"timeout": 0}`)
			fp.toxic("reset_peer", "downstream", `{"timeout": 0}`)
		}},
		{name: "partition", down: true, hold: partition, apply: func(fp *faultProxy) {
			// The proxy disabled: connections closed, new ones refused.
			fp.p.Stop()
		}},
	}
}

// A faultProxy is a toxiproxy proxy in front of one broker, in this
// process, on a port below the ephemeral range (see
// brokertest.StablePort), so that it can be stopped and started again.
type faultProxy struct {
	t    *testing.T
	p    *toxiproxy.Proxy
	port int
	n    int // toxics added, for their names
}

// newFaultProxy starts a proxy to upstream (HOST:PORT), stopped at
// cleanup.
func newFaultProxy(t *testing.T, upstream string) *faultProxy {
	t.Helper()
	// Some toxics log through zerolog's global logger, at trace level.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	port := brokertest.StablePort(t)
	p := toxiproxy.NewProxy(srv, t.Name(), net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &faultProxy{t: t, p: p, port: port}
}

// addr returns the proxy's HOST:PORT.
func (fp *faultProxy) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(fp.port)) }

// toxic adds a toxic of type typ with attributes (JSON) to the stream
// (upstream: bridge to broker; downstream: broker to bridge) of every
// connection, those open and those to come.
func (fp *faultProxy) toxic(typ, stream, attributes string) {
	fp.t.Helper()
	fp.n++
	js := fmt.Sprintf(`{"name": "%s-%d", "type": %q, "stream": %q, "attributes": %s}`, typ, fp.n, typ, stream, attributes)
	if _, err := fp.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		fp.t.Fatalf("toxic %s: %v", js, err)
	}
}

// heal removes every toxic and enables the proxy again.
func (fp *faultProxy) heal() {
	fp.t.Helper()
	fp.p.Toxics.ResetToxics(context.Background())
	if !fp.p.Enabled {
		if err := fp.p.Start(); err != nil {
			fp.t.Fatal(err)
		}
	}
}

// A faultBroker is a broker of TestBrokerFaults, a route of the bridge to
// it through a proxy, and a way to publish to it directly.
type faultBroker struct {
	name    string
	history bool // the broker keeps what the bridge misses: no gap, ever
	conns   int  // TCP connections the bridge keeps to the broker
	setup   func(t *testing.T) brokerTarget
}

// A brokerTarget is what a faultBroker's setup made.
type brokerTarget struct {
	upstream string                  // the broker's HOST:PORT
	route    func(via string) string // the -route flag, through the proxy at via
	// publish publishes a payload directly to the broker; it may be called
	// from any goroutine.
	publish func(payload string) error
	// consumers counts the broker's consumers of the route's stream; nil
	// where there is none to count (core NATS).
	consumers func() (int, error)
}

func faultBrokers() []faultBroker {
	return []faultBroker{
		{name: "jetstream", history: true, conns: 2, setup: func(t *testing.T) brokerTarget {
			ns := runNATS(t)
			js, err := jetstream.New(ns.conn())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FAULTS", Subjects: []string{"faults.>"}})
			if err != nil {
				t.Fatal(err)
			}
			return brokerTarget{
				upstream: ns.Addr(),
				route:    func(via string) string { return "/r=jetstream://" + via + "/FAULTS" },
				publish: func(p string) error {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					// The message ID makes a retry of a stored publish a no-op.
					_, err := js.Publish(ctx, "faults.new", []byte(p), jetstream.WithMsgID(p))
					return err
				},
				consumers: func() (int, error) {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					info, err := st.Info(ctx)
					if err != nil {
						return 0, err
					}
					return info.State.Consumers, nil
				},
			}
		}},
		{name: "core", conns: 1, setup: func(t *testing.T) brokerTarget {
			ns := runNATS(t)
			nc := ns.conn()
			return brokerTarget{
				upstream: ns.Addr(),
				route:    func(via string) string { return "/r=nats://" + via + "/faults.>" },
				publish: func(p string) error {
					if err := nc.Publish("faults.new", []byte(p)); err != nil {
						return err
					}
					return nc.Flush()
				},
			}
		}},
		{name: "rabbitmq", history: true, conns: 1, setup: func(t *testing.T) brokerTarget { return rabbitTarget(t, true) }},
		{name: "rabbitmq-exchange", conns: 1, setup: func(t *testing.T) brokerTarget { return rabbitTarget(t, false) }},
	}
}

// rabbitTarget declares a stream queue, or a fanout exchange, on the
// RabbitMQ broker, and returns its target.
func rabbitTarget(t *testing.T, stream bool) brokerTarget {
	u, err := url.Parse(brokertest.AMQP(t))
	if err != nil {
		t.Fatal(err)
	}
	counted := os.Getenv("AMQP_URL") == ""
	if counted {
		// A virtual host of the test's own, whose channels are the
		// bridge's and the publisher's.
		u.Path = "/" + rabbitVhost(t, u.User.Username())
	} else {
		t.Log("AMQP_URL is set: not counting the consumers of that broker")
	}
	conn, err := amqp.Dial(u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	name := fmt.Sprintf("esbridge-faults-%d", time.Now().UnixNano())
	exchange, key, query := "", name, "stream="+name
	if err == nil && stream {
		_, err = ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": "stream"})
		t.Cleanup(func() { ch.QueueDelete(name, false, false, false) })
	} else if err == nil {
		// Not auto-deleted: it would go with the bridge's binding when
		// the bridge's connection drops.
		err = ch.ExchangeDeclare(name, "fanout", false, false, false, false, nil)
		exchange, key, query = name, "", "exchange="+name
		t.Cleanup(func() { ch.ExchangeDelete(name, false, false) })
	}
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	tg := brokerTarget{
		upstream: u.Host,
		route: func(via string) string {
			u := *u
			u.Host, u.RawQuery = via, query
			return "/r=" + u.String()
		},
		publish: func(p string) error {
			mu.Lock()
			defer mu.Unlock()
			dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, amqp.Publishing{Body: []byte(p)})
			if err != nil {
				return err
			}
			if !dc.Wait() {
				return fmt.Errorf("%s not confirmed", p)
			}
			return nil
		},
	}
	if counted {
		tg.consumers = func() (int, error) { return rabbitConsumers(strings.TrimPrefix(u.Path, "/")) }
	}
	return tg
}

// rabbitVhost makes a virtual host on the RabbitMQ broker of
// scripts/rabbitmq.sh, with every permission for user, deleted at
// cleanup, and returns its name. It needs rabbitmqctl: without it, t
// fails in CI and is skipped elsewhere.
func rabbitVhost(t *testing.T, user string) string {
	t.Helper()
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		msg := "rabbitmqctl, to count the broker's consumers: " + err.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	vhost := fmt.Sprintf("esbridge-faults-%d", time.Now().UnixNano())
	ctl := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ctl("add_vhost", vhost)
	t.Cleanup(func() { ctl("delete_vhost", vhost) })
	ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	return vhost
}

// rabbitConsumers counts the consumers of the channels of vhost: those
// the broker holds for the bridge, as the publisher consumes nothing. (A
// passive declare of a stream answers 0, list_consumers leaves out the
// consumers of streams, and list_queues counts, for a minute or so, those
// of channels already closed.)
func rabbitConsumers(vhost string) (int, error) {
	// list_channels lists the channels of every virtual host.
	out, err := exec.Command("rabbitmqctl", "-q", "list_channels", "--no-table-headers", "vhost", "consumer_count").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("rabbitmqctl list_channels: %v: %s", err, out)
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		v, count, ok := strings.Cut(strings.TrimSpace(l), "\t")
		if !ok || v != vhost {
			continue
		}
		c, err := strconv.Atoi(count)
		if err != nil {
			return 0, fmt.Errorf("rabbitmqctl list_channels: line %q", l)
		}
		n += c
	}
	return n, nil
}

// Faults of the network between esbridge and its broker, with toxiproxy
// in between, on JetStream, core NATS, RabbitMQ stream and RabbitMQ
// exchange routes: 500 ms of latency each way, a 1 KB/s trickle, a
// connection that hangs without closing, connections reset, and a
// partition (5 s, or FAULT_PARTITION). Messages are published directly
// to the broker all along; one client stays connected, one leaves and
// resumes with its ID in the middle of the fault, one resumes after it
// from the first message (beyond the bridge's backlog, from the broker).
// Each gets every message once, in order, and a gap event only where the
// broker lost messages (core NATS and an exchange while the bridge was
// away, never JetStream nor a RabbitMQ stream). /readyz is 503 while the
// broker is unreachable, 200 otherwise; the bridge notices a dead
// connection within noticeBound and recovers by itself within
// recoverBound of the network being whole again; then its goroutines,
// its connections to the broker and the broker's consumers are what they
// were before the fault. Each row logs its times.
func TestBrokerFaults(t *testing.T) {
	t.Parallel()
	partition := 5 * time.Second
	if v := os.Getenv(partitionEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", partitionEnv, v, err)
		}
		partition = d
	}
	for _, br := range faultBrokers() {
		t.Run(br.name, func(t *testing.T) {
			t.Parallel()
			for _, f := range faults(partition) {
				t.Run(f.name, func(t *testing.T) {
					t.Parallel()
					testFault(t, br, f)
				})
			}
		})
	}
}

// testFault runs fault f on broker br.
func testFault(t *testing.T, br faultBroker, f fault) {
	tg := br.setup(t)
	fp := newFaultProxy(t, tg.upstream)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-backlog", "16", "-route", tg.route(fp.addr()))
	b.WaitReadyz(200)
	readyz := watchReadyz(t, b)
	publishSync := func(payloads ...string) {
		t.Helper()
		for _, p := range payloads {
			if err := tg.publish(p); err != nil {
				t.Fatal(err)
			}
		}
	}

	stays := connect(t, b.URL("/r"), "")
	stays.syncLive(publishSync)
	leaves := connect(t, b.URL("/r"), stays.lastEventID())
	staysEv, leavesEv := collect(t, stays), collect(t, leaves)
	pub := publishThroughout(t, tg.publish)
	poll.Until(t, waitFor, "both clients receive p5", func() bool { return staysEv.max() >= 5 && leavesEv.max() >= 5 })

	// What the bridge holds before the fault, with its two clients.
	goroutines := b.scrape()["go_goroutines"]
	consumers := -1
	if tg.consumers != nil {
		var err error
		consumers, err = tg.consumers()
		if err != nil {
			t.Fatal(err)
		}
	}
	connsLike := func() error {
		if c := establishedTo(t, b.Pid(), fp.port); len(c) != br.conns {
			return fmt.Errorf("%d connections (%s), want %d", len(c), strings.Join(c, ", "), br.conns)
		}
		return nil
	}
	poll.UntilNil(t, waitFor, "the bridge has its connections to the broker", connsLike)

	began := time.Now()
	atFault := pub.count()
	f.apply(fp)
	var noticed time.Duration
	if f.down {
		poll.UntilNil(t, noticeBound, "/readyz answers 503 during "+f.name, func() error { return readyzIs(b, 503) })
		noticed = time.Since(began)
	} else {
		// The broker is slow, not gone: messages still come.
		poll.Until(t, waitFor, "the client staying receives messages published during "+f.name, func() bool {
			return staysEv.max() > atFault+10
		})
	}

	// The fault lasts, /readyz telling the truth all along; a client
	// leaves and resumes with its ID meanwhile, as a browser whose own
	// connection dropped.
	want := 200
	if f.down {
		want = 503
	}
	holding := time.Now()
	var back *collected
	var holdErr error
	poll.Wait(f.hold, func() bool {
		// A request that times out, on a machine busy with other
		// tests, tells nothing.
		if code, err := readyzCode(b); err == nil && code != want {
			holdErr = fmt.Errorf("/readyz answers %d, want %d", code, want)
			return true
		}
		if back == nil && time.Since(holding) >= f.hold/2 {
			leaves.close()
			back = collect(t, connect(t, b.URL("/r"), leaves.lastEventID()))
		}
		return false
	})
	if holdErr != nil {
		t.Fatalf("during %s: %v", f.name, holdErr)
	}
	if back == nil { // a hold too short to poll twice
		leaves.close()
		back = collect(t, connect(t, b.URL("/r"), leaves.lastEventID()))
	}

	fp.heal()
	healed, atHeal, behind := time.Now(), pub.count(), pub.count()-staysEv.max()
	poll.UntilNil(t, recoverBound, "/readyz answers 200 after "+f.name, func() error { return readyzIs(b, 200) })
	ready := time.Since(healed)
	poll.Until(t, recoverBound, "the client staying receives a message published after "+f.name+" ended", func() bool {
		return staysEv.max() > atHeal
	})
	flowing := time.Since(healed)
	t.Logf("%s on %s: noticed after %v; %d messages behind when the network healed; then ready after %v, delivering after %v",
		f.name, br.name, noticed.Round(10*time.Millisecond), behind, ready.Round(10*time.Millisecond), flowing.Round(10*time.Millisecond))

	// A client resumes from the first message, beyond the backlog: from
	// the broker, through the healed network.
	first := staysEv.first(payload(1))
	if first == nil {
		t.Fatalf("the client staying did not receive p1: %v", staysEv.events())
	}
	late := connect(t, b.URL("/r"), first.LastEventID)
	lateEv := collect(t, late)

	last := pub.stop()
	publishSync("end")
	for _, c := range []*collected{staysEv, back, lateEv} {
		poll.Until(t, waitFor, c.who+" receives the end", func() bool { return c.first("end") != nil })
	}
	gaps := checkDelivery(t, "the client staying", staysEv.events(), 1, last, br.history)
	checkDelivery(t, "the client resuming during the fault", append(leavesEv.events(), back.events()...), 1, last, br.history)
	checkDelivery(t, "the client resuming after the fault", lateEv.events(), 2, last, br.history)
	if f.down && !br.history && gaps == 0 {
		t.Errorf("the client staying got no gap event, but the broker kept nothing of what was published while it was unreachable")
	}
	// Once ready again, the bridge may be unready for a moment more: a
	// JetStream reader that nats.go failed to re-create during the fault
	// is reopened by the bridge (the client misses nothing).
	// Requests that failed (timed out on a busy machine) tell nothing.
	got := slices.Compact(slices.DeleteFunc(readyz(), func(c string) bool { return c == "error" }))
	switch {
	case !f.down && !slices.Equal(got, []string{"200"}):
		t.Errorf("/readyz answered %v in turn, want 200 throughout", got)
	case f.down && (len(got) < 3 || got[0] != "200" || got[1] != "503" || got[len(got)-1] != "200"):
		t.Errorf("/readyz answered %v in turn, want 200, then 503 while the broker was unreachable, then 200", got)
	case len(got) > 3:
		t.Logf("/readyz answered %v in turn", got)
	}

	// Nothing left behind, with the same two clients as before.
	late.close()
	poll.UntilNil(t, settleBound, "the bridge's connections to the broker are as before the fault", connsLike)
	if tg.consumers != nil {
		t.Logf("%d consumers on the broker before the fault", consumers)
		poll.UntilNil(t, settleBound, "the broker's consumers are as before the fault", func() error {
			n, err := tg.consumers()
			if err == nil && n != consumers {
				err = fmt.Errorf("%d consumers, want %d", n, consumers)
			}
			return err
		})
	}
	poll.UntilNil(t, settleBound, "the bridge runs as many goroutines as before the fault", func() error {
		if n := b.scrape()["go_goroutines"]; n > goroutines+goroutineSlack {
			return fmt.Errorf("%v goroutines, %v before", n, goroutines)
		}
		return nil
	})
}

// readyzIs returns an error unless b's /readyz answers code.
func readyzIs(b *proc, code int) error {
	got, err := readyzCode(b)
	if err == nil && got != code {
		err = fmt.Errorf("/readyz answers %d, want %d", got, code)
	}
	return err
}

// readyzCode returns the status of b's /readyz.
func readyzCode(b *proc) (int, error) {
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(b.URL("/readyz"))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// A background publisher publishes p1, p2, ... every 20 ms, from a
// goroutine of its own, until stopped; it retries a payload until the
// broker takes it.
type background struct {
	n    atomic.Int64 // published
	stop func() int   // stops it and returns how many it published
}

func publishThroughout(t *testing.T, publish func(string) error) *background {
	bg := &background{}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			for publish(payload(i)) != nil {
				select {
				case <-done:
					return
				case <-tick.C:
				}
			}
			bg.n.Store(int64(i))
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	bg.stop = func() int {
		once.Do(func() { close(done); <-stopped })
		return int(bg.n.Load())
	}
	t.Cleanup(func() { bg.stop() })
	return bg
}

// count returns how many messages were published so far.
func (bg *background) count() int { return int(bg.n.Load()) }

// collected holds the events of a client, read from it by a goroutine of
// its own from when collect is called.
type collected struct {
	who string
	mu  sync.Mutex
	evs []ssetest.Event
	top int // the highest N of the messages pN received
}

// collect reads c's events until its stream ends (at cleanup at the
// latest).
func collect(t *testing.T, c *sseClient) *collected {
	col := &collected{who: c.url}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case ev := <-c.events:
				col.add(ev)
			case <-c.done:
				for {
					select {
					case ev := <-c.events:
						col.add(ev)
					default:
						return
					}
				}
			}
		}
	})
	t.Cleanup(func() { c.close(); wg.Wait() })
	return col
}

func (c *collected) add(ev ssetest.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evs = append(c.evs, ev)
	if n, ok := payloadN(ev); ok {
		c.top = max(c.top, n)
	}
}

// max returns the highest N of the messages pN received so far.
func (c *collected) max() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.top
}

// first returns the first message received with data, or nil.
func (c *collected) first(data string) *ssetest.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ev := range c.evs {
		if ev.Type == "message" && ev.Data == data {
			return &c.evs[i]
		}
	}
	return nil
}

// events returns the events received so far.
func (c *collected) events() []ssetest.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

// payload returns the payload of message pN: "pN", then padding to 128
// bytes, so that the trickle of TestBrokerFaults is slower than what is
// published.
func payload(n int) string {
	p := "p" + strconv.Itoa(n) + " "
	return p + strings.Repeat(".", 128-len(p))
}

// payloadN returns N of a message pN.
func payloadN(ev ssetest.Event) (int, bool) {
	word, _, _ := strings.Cut(ev.Data, " ")
	if ev.Type != "message" || !strings.HasPrefix(word, "p") {
		return 0, false
	}
	n, err := strconv.Atoi(word[1:])
	return n, err == nil
}

// checkDelivery checks the events of a client that should have received
// the messages pfrom to plast, then end: each once, in order; none
// missing unless a gap event came between the messages on either side,
// and then only where the broker keeps no history. Sync markers are
// ignored. It returns the number of gap events.
func checkDelivery(t *testing.T, who string, evs []ssetest.Event, from, last int, history bool) int {
	t.Helper()
	prev, gaps, gapSince := from-1, 0, false
	describe := func() string {
		var b strings.Builder
		for _, ev := range evs {
			word, _, _ := strings.Cut(ev.Data, " ") // without the padding
			fmt.Fprintf(&b, "%s:%s ", ev.Type, word)
		}
		return b.String()
	}
	for _, ev := range evs {
		n, isMsg := payloadN(ev)
		switch {
		case ev.Type == "gap":
			if history {
				t.Errorf("%s got a gap event %q, but the broker kept every message; events: %s", who, ev.Data, describe())
			}
			gaps++
			gapSince = true
			continue
		case ev.Type == "message" && ev.Data == "end":
			n, isMsg = last+1, true
		case !isMsg:
			continue // a sync marker
		}
		switch {
		case n <= prev:
			t.Errorf("%s got p%d after p%d: twice, or out of order; events: %s", who, n, prev, describe())
			return gaps
		case n > prev+1 && !gapSince:
			t.Errorf("%s lost p%d to p%d without a gap event; events: %s", who, prev+1, n-1, describe())
			return gaps
		}
		prev, gapSince = n, false
		if n == last+1 {
			return gaps
		}
	}
	t.Errorf("%s did not get the end; events: %s", who, describe())
	return gaps
}

// establishedTo returns the TCP connections over IPv4 that the process
// pid has established to port ("LOCAL->REMOTE", in /proc's hexadecimal),
// from /proc: its sockets' inodes, matched in its network namespace's
// table.
func establishedTo(t *testing.T, pid, port int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	sockets := make(map[string]bool)
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
			sockets[strings.TrimSuffix(inode, "]")] = true
		}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var conns []string
	remote := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) > 9 && strings.HasSuffix(fs[2], remote) && fs[3] == "01" && sockets[fs[9]] {
			conns = append(conns, fs[1]+"->"+fs[2])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return conns
}
