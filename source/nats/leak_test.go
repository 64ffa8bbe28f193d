package nats

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// TestStreamOpenCancelled opens readers with contexts that end after a
// random short delay, some while the consumer is being created, as
// clients that hang up at once do, and closes every reader returned: no
// consumer is left on the server.
func TestStreamOpenCancelled(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	publish(t, js, "orders.x", 1, 10)
	s := ts.source(Config{Stream: "ORDERS"})
	s.inactive = time.Hour                                      // no help from the server: Close and Open delete
	brokertest.Open(t, s, bridge.Start{Earliest: true}).Close() // connected

	const cycles = 400
	opened := 0
	for i := range cycles {
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(time.Duration(rand.Int64N(int64(5*time.Millisecond))), cancel)
		start := bridge.Start{Position: bridge.Position{uint64(1 + i%10)}}
		if i%3 == 0 {
			start = bridge.Start{}
		}
		r, err := s.Open(ctx, start)
		timer.Stop()
		cancel()
		if err == nil {
			opened++
			r.Close()
		}
	}
	t.Logf("%d of %d opens succeeded", opened, cycles)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if !poll.Wait(3*time.Second, func() bool {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n = info.State.Consumers
		return n == 0
	}) {
		t.Errorf("%d consumers left after 3s", n)
	}
}

// TestStreamConsumerConfig checks that consumers are named by esbridge and
// removed by the server soon after their client vanished.
func TestStreamConsumerConfig(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	s := ts.source(Config{Stream: "ORDERS"})
	for _, start := range []bridge.Start{{}, {Earliest: true}} {
		r := brokertest.Open(t, s, start).(*streamReader)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, "ORDERS", r.prefix+"_1")
		if err != nil {
			t.Fatal(err)
		}
		info := cons.CachedInfo()
		if c := info.Config; c.InactiveThreshold != inactiveThreshold || !strings.HasPrefix(r.prefix, "esbridge-") ||
			c.AckPolicy != jetstream.AckNonePolicy || c.Replicas != 1 || !c.MemoryStorage {
			t.Errorf("consumer %s: %+v", info.Name, c)
		}
	}
}
