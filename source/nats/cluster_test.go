package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/backoff"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// TestCluster reads an R3 stream on a 3-server JetStream cluster, through
// a source whose URL lists every server, with a live reader and a replay
// reader (one on each connection of the source), while a publisher
// publishes continuously and waits for each acknowledgement; then a fault
// strikes: the server of the source's connections dies, the stream's
// leader steps down, or another server dies. Reading as the bridge does
// (reopening at Position after an error), each reader gets every
// acknowledged message once, in order, with no gap, delivery resumes
// after the fault, and the source is Connected. The stall (the longest
// wait of a message acknowledged after the fault for its delivery) and
// the longest gap between deliveries are logged, not asserted: run
//
//	go test -race -run TestCluster -count=5 -v ./source/nats
//
// for the figures of docs/operations.md.
func TestCluster(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault func(t *testing.T, c *clusterRun) string // strikes; returns what it did
	}{
		{"KillConnServer", func(t *testing.T, c *clusterRun) string {
			ns := c.connServer(t)
			ns.Stop()
			return "stopped " + ns.Name() + ", the connections' server"
		}},
		{"StreamLeaderStepDown", func(t *testing.T, c *clusterRun) string {
			old := c.cluster.StreamLeader("ORDERS")
			c.stepDown(t)
			return "stepped down " + old.Name() + ", the stream's leader"
		}},
		{"KillOtherServer", func(t *testing.T, c *clusterRun) string {
			// The worst other server to lose is the one that holds the
			// live reader's consumer (which has one replica), then the
			// stream's leader.
			conn, cons := c.connServer(t), c.consumerServer(t)
			victim := cons
			if victim == conn {
				victim = c.cluster.StreamLeader("ORDERS")
			}
			if victim == conn {
				victim = c.cluster.Servers[1] // the connections are on the first
			}
			victim.Stop()
			return fmt.Sprintf("stopped %s (live consumer on %s, connections on %s)", victim.Name(), cons.Name(), conn.Name())
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := runCluster(t)
			c.waitDelivered(t, 50)
			faultAt := time.Now()
			did := tt.fault(t, c)
			first := c.firstAckAfter(t, faultAt)
			// Let the publisher go on for a while after the readers resumed.
			c.waitDelivered(t, first+200)
			c.stopPublishing()
			if !c.src.Connected() {
				t.Error("not Connected after the fault")
			}
			for _, f := range c.followers {
				stall, gap := c.check(t, f, faultAt)
				t.Logf("%s: %s reader: stall %v (the longest wait of a message acknowledged after the fault for its delivery); longest gap between deliveries %v; %d messages",
					did, f.name, stall.Round(time.Millisecond), gap.Round(time.Millisecond), c.lastAck())
			}
		})
	}
}

// A clusterRun is a live reader and a replay reader of the R3 stream
// ORDERS of a 3-server cluster, each read in a goroutine as the bridge
// reads them, while another publishes to the stream.
type clusterRun struct {
	cluster   *brokertest.NATSCluster
	src       *Source
	pub       *nats.Conn
	js        jetstream.JetStream // on pub
	followers []*follower         // the live reader's, then the replay reader's

	stop      context.CancelFunc // stops the publisher
	published chan struct{}      // closed when the publisher returns

	mu   sync.Mutex
	acks []time.Time // acks[i]: when sequence i+1 was acknowledged
	errs []error     // of the publisher or a reader: the end
}

// A follower reads the stream from sequence 1 on, through one reader after
// another (see clusterRun.follow).
type follower struct {
	name   string // "live" or "replay"
	live   bool   // the route's live reader, on the live connection
	cancel context.CancelFunc
	done   chan struct{} // closed when follow returns

	// Guarded by clusterRun.mu.
	deliveries []delivery
	reader     bridge.Reader // the current one
}

// A delivery is a message a reader returned, and when.
type delivery struct {
	seq  uint64
	data string
	at   time.Time
}

// runCluster starts the cluster, the stream, the publisher and the
// readers.
func runCluster(t *testing.T) *clusterRun {
	t.Helper()
	cl := brokertest.RunNATSCluster(t, 3)
	pub, err := nats.Connect(strings.Join(cl.Addrs(), ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	js, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	poll.UntilNil(t, brokertest.Timeout, "creating the stream", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Replicas: 3})
		return err
	})
	cl.StreamLeader("ORDERS")

	// The route URL lists every server.
	u, err := url.Parse("jetstream://" + strings.Join(cl.Addrs(), ",") + "/ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = testLogger(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Both connections to the first server, so that its loss takes both.
	s.opts = append(s.opts, nats.DontRandomize())
	t.Cleanup(func() { s.Close() })
	c := &clusterRun{cluster: cl, src: s, pub: pub, js: js, published: make(chan struct{})}

	for _, f := range []*follower{{name: "live", live: true}, {name: "replay"}} {
		f.reader = brokertest.Open(t, s, bridge.Start{Position: bridge.Position{1}, Live: f.live})
		f.done = make(chan struct{})
		var ctx context.Context
		ctx, f.cancel = context.WithCancel(context.Background())
		go c.follow(ctx, t, f)
		t.Cleanup(func() {
			f.cancel()
			<-f.done
		})
		c.followers = append(c.followers, f)
	}
	var ctx context.Context
	ctx, c.stop = context.WithCancel(context.Background())
	go c.publish(ctx, js)
	t.Cleanup(c.stopPublishing)
	return c
}

// publish publishes "m1", "m2"... to orders.x, one at a time, each with a
// message ID, trying each again until it is acknowledged, until ctx ends:
// every message it publishes is acknowledged, so that the stream holds
// exactly the acknowledged messages.
func (c *clusterRun) publish(ctx context.Context, js jetstream.JetStream) {
	defer close(c.published)
	for i := 1; ctx.Err() == nil; i++ {
		m := nats.NewMsg("orders.x")
		m.Data = fmt.Appendf(nil, "m%d", i)
		var ack *jetstream.PubAck
		var err error
		poll.Wait(30*time.Second, func() bool {
			actx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			ack, err = js.PublishMsg(actx, m, jetstream.WithMsgID(fmt.Sprint(i)))
			return err == nil
		})
		at := time.Now()
		c.mu.Lock()
		switch {
		case err != nil:
			c.errs = append(c.errs, fmt.Errorf("publishing message %d: %w", i, err))
		case ack.Sequence != uint64(i):
			c.errs = append(c.errs, fmt.Errorf("message %d acknowledged as sequence %d", i, ack.Sequence))
		default:
			c.acks = append(c.acks, at)
		}
		failed := len(c.errs) > 0
		c.mu.Unlock()
		if failed {
			return
		}
		backoff.Sleep(ctx, 5*time.Millisecond)
	}
}

// follow reads f's reader until ctx ends, and when it fails reopens it at
// its Position, as the bridge does (bridge/route.go).
func (c *clusterRun) follow(ctx context.Context, t *testing.T, f *follower) {
	defer close(f.done)
	c.mu.Lock()
	r := f.reader
	c.mu.Unlock()
	defer func() { r.Close() }()
	var retry backoff.Backoff
	for {
		m, err := r.Next(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			c.mu.Lock()
			f.deliveries = append(f.deliveries, delivery{seq: m.Offset, data: string(m.Data), at: time.Now()})
			c.mu.Unlock()
			retry.Reset()
			continue
		}
		p := r.Position()
		t.Logf("%s reader: Next: %v; reopening at %v", f.name, err, p)
		r.Close()
		for {
			if !retry.Wait(ctx) {
				r = nopReader{}
				return
			}
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err = c.src.Open(octx, bridge.Start{Position: p, Live: f.live})
			cancel()
			if err == nil {
				c.mu.Lock()
				f.reader = r
				c.mu.Unlock()
				break
			}
			if !errors.Is(err, bridge.ErrUnavailable) && ctx.Err() == nil {
				c.mu.Lock()
				c.errs = append(c.errs, fmt.Errorf("%s reader: reopening at %v: %w", f.name, p, err))
				c.mu.Unlock()
				r = nopReader{}
				return
			}
		}
	}
}

// A nopReader stands for no reader, so that follow can close the one it has.
type nopReader struct{ bridge.Reader }

func (nopReader) Close() error { return nil }

// stopPublishing stops the publisher and waits for it.
func (c *clusterRun) stopPublishing() {
	c.stop()
	<-c.published
}

// lastAck returns the last sequence acknowledged.
func (c *clusterRun) lastAck() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return uint64(len(c.acks))
}

// waitDelivered waits until every reader returned sequence seq, or one
// failed.
func (c *clusterRun) waitDelivered(t *testing.T, seq uint64) {
	t.Helper()
	var f *follower
	var n uint64
	ok := poll.Wait(30*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, f = range c.followers {
			n = 0
			if len(f.deliveries) > 0 {
				n = f.deliveries[len(f.deliveries)-1].seq
			}
			if n < seq {
				break
			}
		}
		return n >= seq || len(c.errs) > 0
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) > 0 {
		t.Fatal(errors.Join(c.errs...))
	}
	if !ok {
		t.Fatalf("the %s reader has read up to sequence %d after 30s, want %d (%d acknowledged)", f.name, n, seq, len(c.acks))
	}
}

// firstAckAfter waits for the first message acknowledged after at, and
// for the readers to return it; it returns its sequence.
func (c *clusterRun) firstAckAfter(t *testing.T, at time.Time) uint64 {
	t.Helper()
	var seq uint64
	poll.Until(t, 30*time.Second, "a message acknowledged after the fault", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i := len(c.acks) - 1; i >= 0 && c.acks[i].After(at); i-- {
			seq = uint64(i + 1)
		}
		return seq != 0
	})
	c.waitDelivered(t, seq)
	return seq
}

// check stops f once it has read every message acknowledged, checks that
// it returned each once, in order, and returns the stall (the longest time
// from the acknowledgement of a message acknowledged after at to its
// delivery) and the longest gap between two deliveries.
func (c *clusterRun) check(t *testing.T, f *follower, at time.Time) (stall, gap time.Duration) {
	t.Helper()
	c.waitDelivered(t, c.lastAck())
	f.cancel()
	<-f.done
	c.mu.Lock()
	defer c.mu.Unlock()
	gapAt := 0
	for i, d := range f.deliveries {
		if want := uint64(i + 1); d.seq != want || d.data != fmt.Sprintf("m%d", want) {
			t.Fatalf("%s reader: delivery %d: sequence %d %q, want %d", f.name, i, d.seq, d.data, want)
		}
		if i > 0 && d.at.Sub(f.deliveries[i-1].at) > gap {
			gap, gapAt = d.at.Sub(f.deliveries[i-1].at), i
		}
	}
	if len(f.deliveries) != len(c.acks) {
		t.Fatalf("%s reader: %d deliveries, %d acknowledged", f.name, len(f.deliveries), len(c.acks))
	}
	t.Logf("%s reader: the longest gap ends with sequence %d, delivered %v after the fault, acknowledged %v after it",
		f.name, gapAt+1, f.deliveries[gapAt].at.Sub(at).Round(time.Millisecond), c.acks[gapAt].Sub(at).Round(time.Millisecond))
	for i, a := range c.acks {
		if a.After(at) {
			stall = max(stall, f.deliveries[i].at.Sub(a))
		}
	}
	return stall, gap
}

// connServer returns the server of the source's connections, both on
// the same.
func (c *clusterRun) connServer(t *testing.T) *brokertest.NATSServer {
	t.Helper()
	name := c.src.live.nc.ConnectedServerName()
	ns := c.cluster.Server(name)
	if ns == nil || c.src.replay.nc.ConnectedServerName() != name {
		t.Fatalf("the live connection is on %q, the replay one on %q", name, c.src.replay.nc.ConnectedServerName())
	}
	return ns
}

// consumerServer returns the server of the live reader's consumer.
func (c *clusterRun) consumerServer(t *testing.T) *brokertest.NATSServer {
	t.Helper()
	c.mu.Lock()
	r, ok := c.followers[0].reader.(*streamReader)
	c.mu.Unlock()
	if !ok {
		t.Fatal("no live reader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	var infos []*jetstream.ConsumerInfo
	l := st.ListConsumers(ctx)
	for info := range l.Info() {
		if strings.HasPrefix(info.Name, r.prefix+"_") {
			infos = append(infos, info)
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Cluster == nil || c.cluster.Server(infos[0].Cluster.Leader) == nil {
		t.Fatalf("consumers of the live reader: %+v", infos)
	}
	return c.cluster.Server(infos[0].Cluster.Leader)
}

// stepDown asks the stream's leader to step down, and waits for another.
func (c *clusterRun) stepDown(t *testing.T) {
	t.Helper()
	old := c.cluster.StreamLeader("ORDERS")
	msg, err := c.pub.Request("$JS.API.STREAM.LEADER.STEPDOWN.ORDERS", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Success {
		t.Fatalf("step-down: %s", msg.Data)
	}
	poll.Until(t, brokertest.Timeout, "a new stream leader", func() bool { return c.cluster.StreamLeader("ORDERS") != old })
}

// testLogger returns a logger that logs to t, with the time, until t's
// cleanup begins.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// A testWriter writes to t's log until done.
type testWriter struct {
	t    *testing.T
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
