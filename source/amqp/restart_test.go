package amqp

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
)

// A broker restart mid-stream: each reader waits for the connection to
// come back and goes on by itself. The stream reader loses nothing and
// repeats nothing; the exchange reader says ErrLost once, then reads what
// comes after; the queue reader receives every message, some maybe twice
// (those not yet acknowledged). Connected follows the connection.
func TestBrokerRestart(t *testing.T) {
	restart := brokertest.LockRabbitMQ(t, "../../scripts/rabbitmq.sh")
	b := broker(t)
	stream := b.stream(nil)
	ex, queue := b.name(), b.name()
	if err := b.ch.ExchangeDeclare(ex, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.deleteQueue(queue)
		b.connect()
		b.ch.ExchangeDelete(ex, false, false)
	})
	ss, se, sq := b.source("stream="+stream), b.source("exchange="+ex), b.source("queue="+queue+"&prefetch=10")
	rs := brokertest.Open(t, ss, bridge.Start{Earliest: true})
	re := brokertest.Open(t, se, bridge.Start{})
	rq := brokertest.Open(t, sq, bridge.Start{})

	before, after := bodies("a", 0, 25), bodies("b", 0, 25)
	publishAll := func(msgs []string) {
		b.publish("", stream, msgs...)
		b.publish(ex, "", msgs...)
		b.publish("", queue, msgs...)
	}
	publishAll(before)
	for name, r := range map[string]bridge.Reader{"stream": rs, "exchange": re, "queue": rq} {
		if got, _ := read(t, r, len(before)); !slices.Equal(got, before) {
			t.Fatalf("%s reader before the restart: %v", name, got)
		}
	}

	restart()
	for _, s := range []*Source{ss, se, sq} {
		waitConnected(t, s)
	}
	// The exchange reader's new queue is bound once Next is called (in
	// the bridge, the live reader is always waiting in Next).
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Timeout)
	defer cancel()
	if m, err := re.Next(ctx); !errors.Is(err, bridge.ErrLost) {
		t.Errorf("exchange reader after the restart: %q, %v; want ErrLost", m.Data, err)
	}
	b.connect()
	publishAll(after)

	if got, _ := read(t, rs, len(after)); !slices.Equal(got, after) {
		t.Errorf("stream reader after the restart: %v", got)
	}
	brokertest.ExpectNothing(t, rs)

	if got, _ := read(t, re, len(after)); !slices.Equal(got, after) {
		t.Errorf("exchange reader after ErrLost: %v", got)
	}

	// The queue: every message of after, in order, maybe after some of
	// before again.
	var got []string
	for len(got) == 0 || got[len(got)-1] != after[len(after)-1] {
		got = append(got, string(brokertest.Next(t, rq).Data))
	}
	if i := slices.Index(got, after[0]); i < 0 || !slices.Equal(got[i:], after) || !allIn(got[:i], before) {
		t.Errorf("queue reader after the restart: %v", got)
	}
}

func allIn(s, set []string) bool {
	for _, x := range s {
		if !slices.Contains(set, x) {
			return false
		}
	}
	return true
}
