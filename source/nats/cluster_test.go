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

// TestCluster reads an R3 stream live on a 3-server JetStream cluster,
// through a source whose URL lists every server, while a publisher
// publishes continuously and waits for each acknowledgement; then a fault
// strikes: the server of the source's connection dies, the stream's leader
// steps down, or a server other than the connection's dies. Reading as the
// bridge does (reopening at Position after an error), the reader gets
// every acknowledged message once, in order, with no gap, and delivery
// resumes after the fault. The stall (from the first acknowledgement after
// the fault to its delivery) and the longest gap between deliveries are
// logged, not asserted: run
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
			return "stopped " + ns.Name() + ", the connection's server"
		}},
		{"StreamLeaderStepDown", func(t *testing.T, c *clusterRun) string {
			old := c.cluster.StreamLeader("ORDERS")
			c.stepDown(t)
			return "stepped down " + old.Name() + ", the stream's leader"
		}},
		{"KillOtherServer", func(t *testing.T, c *clusterRun) string {
			// The worst other server to lose is the one that holds the
			// reader's consumer (which has one replica), then the
			// stream's leader.
			conn, cons := c.connServer(t), c.consumerServer(t)
			victim := cons
			if victim == conn {
				victim = c.cluster.StreamLeader("ORDERS")
			}
			if victim == conn {
				victim = c.cluster.Servers[0]
				if victim == conn {
					victim = c.cluster.Servers[1]
				}
			}
			victim.Stop()
			return fmt.Sprintf("stopped %s (consumer on %s, connection on %s)", victim.Name(), cons.Name(), conn.Name())
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := runCluster(t)
			c.waitDelivered(t, 50)
			faultAt := time.Now()
			did := tt.fault(t, c)
			first := c.firstAckAfter(t, faultAt)
			// Let the publisher go on for a while after the reader resumed.
			c.waitDelivered(t, first+200)
			c.stopPublishing()
			stall, gap := c.check(t, faultAt)
			t.Logf("%s: stall %v (the longest wait of a message acknowledged after the fault for its delivery); longest gap between deliveries %v; %d messages",
				did, stall.Round(time.Millisecond), gap.Round(time.Millisecond), c.lastAck())
		})
	}
}

// A clusterRun is a live reader of the R3 stream ORDERS of a 3-server
// cluster, read in a goroutine as the bridge reads it, while another
// publishes to the stream.
type clusterRun struct {
	cluster *brokertest.NATSCluster
	src     *Source
	pub     *nats.Conn
	js      jetstream.JetStream // on pub

	stop      context.CancelFunc // stops the publisher
	published chan struct{}      // closed when the publisher returns
	read      chan struct{}      // closed when the reader returns
	cancel    context.CancelFunc // stops the reader

	mu         sync.Mutex
	acks       []time.Time // acks[i]: when sequence i+1 was acknowledged
	deliveries []delivery
	reader     bridge.Reader // the reader's current one
	errs       []error       // of the publisher or the reader: the end
}

// A delivery is a message the reader returned, and when.
type delivery struct {
	seq  uint64
	data string
	at   time.Time
}

// runCluster starts the cluster, the stream, the publisher and the reader.
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
	t.Cleanup(func() { s.Close() })
	c := &clusterRun{cluster: cl, src: s, pub: pub, js: js, published: make(chan struct{}), read: make(chan struct{})}
	c.reader = brokertest.Open(t, s, bridge.Start{Live: true})

	var ctx context.Context
	ctx, c.stop = context.WithCancel(context.Background())
	go c.publish(ctx, js)
	ctx, c.cancel = context.WithCancel(context.Background())
	go c.readLive(ctx, t)
	t.Cleanup(func() {
		c.stopPublishing()
		c.cancel()
		<-c.read
	})
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

// readLive reads the live reader until ctx ends, and when it fails reopens
// it at its Position, as the bridge does (bridge/route.go).
func (c *clusterRun) readLive(ctx context.Context, t *testing.T) {
	defer close(c.read)
	c.mu.Lock()
	r := c.reader
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
			c.deliveries = append(c.deliveries, delivery{seq: m.Offset, data: string(m.Data), at: time.Now()})
			c.mu.Unlock()
			retry.Reset()
			continue
		}
		p := r.Position()
		t.Logf("%s Next: %v; reopening at %v", time.Now().Format("15:04:05.000"), err, p)
		r.Close()
		for {
			if !retry.Wait(ctx) {
				r = nopReader{}
				return
			}
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err = c.src.Open(octx, bridge.Start{Position: p, Live: true})
			cancel()
			if err == nil {
				c.mu.Lock()
				c.reader = r
				c.mu.Unlock()
				break
			}
			if !errors.Is(err, bridge.ErrUnavailable) && ctx.Err() == nil {
				c.mu.Lock()
				c.errs = append(c.errs, fmt.Errorf("reopening at %v: %w", p, err))
				c.mu.Unlock()
				r = nopReader{}
				return
			}
		}
	}
}

// A nopReader stands for no reader, so that readLive can close the one it has.
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

// waitDelivered waits until the reader returned sequence seq, or failed.
func (c *clusterRun) waitDelivered(t *testing.T, seq uint64) {
	t.Helper()
	var n uint64
	ok := poll.Wait(30*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.deliveries) > 0 {
			n = c.deliveries[len(c.deliveries)-1].seq
		}
		return n >= seq || len(c.errs) > 0
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) > 0 {
		t.Fatal(errors.Join(c.errs...))
	}
	if !ok {
		t.Fatalf("the reader has read up to sequence %d after 30s, want %d (%d acknowledged)", n, seq, len(c.acks))
	}
}

// firstAckAfter waits for the first message acknowledged after at, and
// for the reader to return it; it returns its sequence.
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

// check stops the reader once it has read every message acknowledged,
// checks that it returned each once, in order, and returns the stall (the
// longest time from the acknowledgement of a message acknowledged after at
// to its delivery) and the longest gap between two deliveries.
func (c *clusterRun) check(t *testing.T, at time.Time) (stall, gap time.Duration) {
	t.Helper()
	c.waitDelivered(t, c.lastAck())
	c.cancel()
	<-c.read
	c.mu.Lock()
	defer c.mu.Unlock()
	gapAt := 0
	for i, d := range c.deliveries {
		if want := uint64(i + 1); d.seq != want || d.data != fmt.Sprintf("m%d", want) {
			t.Fatalf("delivery %d: sequence %d %q, want %d", i, d.seq, d.data, want)
		}
		if i > 0 && d.at.Sub(c.deliveries[i-1].at) > gap {
			gap, gapAt = d.at.Sub(c.deliveries[i-1].at), i
		}
	}
	t.Logf("the longest gap ends with sequence %d, delivered %v after the fault, acknowledged %v after it",
		gapAt+1, c.deliveries[gapAt].at.Sub(at).Round(time.Millisecond), c.acks[gapAt].Sub(at).Round(time.Millisecond))
	if len(c.deliveries) != len(c.acks) {
		t.Fatalf("%d deliveries, %d acknowledged", len(c.deliveries), len(c.acks))
	}
	for i, a := range c.acks {
		if a.After(at) {
			stall = max(stall, c.deliveries[i].at.Sub(a))
		}
	}
	return stall, gap
}

// connServer returns the server of the source's live connection.
func (c *clusterRun) connServer(t *testing.T) *brokertest.NATSServer {
	t.Helper()
	name := c.src.live.nc.ConnectedServerName()
	ns := c.cluster.Server(name)
	if ns == nil {
		t.Fatalf("the live connection is on %q, no server of the cluster", name)
	}
	return ns
}

// consumerServer returns the server of the live reader's consumer, the
// stream's only one.
func (c *clusterRun) consumerServer(t *testing.T) *brokertest.NATSServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	var infos []*jetstream.ConsumerInfo
	l := st.ListConsumers(ctx)
	for info := range l.Info() {
		infos = append(infos, info)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Cluster == nil || c.cluster.Server(infos[0].Cluster.Leader) == nil {
		t.Fatalf("consumers of the stream: %+v", infos)
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
