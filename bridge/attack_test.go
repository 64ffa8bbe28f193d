package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/fakesource"
)

// An attacker on a public route sends event IDs that decode (the right
// version, stream and incarnation, copied from a real ID) but name a
// position the stream can never have. Each gets a malformed-id gap, and
// holds no catch-up reader: a legitimate resume, older than the log, gets
// all its messages with 1 or 8 attackers connected, in about the time it
// takes alone (the ratio is logged).

// craft returns real, an ID of the route, with the position offsets.
func craft(t *testing.T, real string, offsets ...uint64) string {
	t.Helper()
	id := bridge.WithPosition(real, offsets)
	if id == "" {
		t.Fatalf("not an ID: %q", real)
	}
	return id
}

// attack opens n streams with the crafted IDs, in turn, and checks that
// each is answered with a malformed-id gap. The streams stay open until
// the test ends.
func attack(t *testing.T, url string, n int, ids []string) {
	t.Helper()
	for i := range n {
		c := open(t, url, ids[i%len(ids)])
		ev := c.next()
		var gap esource.Gap
		if err := json.Unmarshal([]byte(ev.data), &gap); err != nil || ev.typ != esource.GapType {
			t.Fatalf("attacker %d: first event %+v, want a gap", i, ev)
		}
		if gap.Reason != "malformed-id" {
			t.Errorf("attacker %d: gap %+v, want reason malformed-id", i, gap)
		}
	}
}

func TestCraftedIDsJetStream(t *testing.T) {
	js, addr := jetStream(t)
	url := serveBridge(t, addr, bridge.Config{Backlog: 16}, bridge.Options{})
	first := open(t, url, "")
	const n = 2000
	publish(t, js, 1, n)
	ids := make([]string, n+1)
	for i := 1; i <= n; i++ {
		ids[i] = first.expect(i, i)
	}
	crafted := []string{
		craft(t, ids[1], 0),                 // sequence 0
		craft(t, ids[1], 5, 5),              // two positions on a stream of one
		craft(t, ids[1], math.MaxUint64-1),  // past any sequence a broker issues
		craft(t, ids[1], 1<<63),             // a negative offset, as int64
		craft(t, ids[1]),                    // no partition at all
		craft(t, ids[1], 3, 1<<40, 1<<50),   // three partitions
		craft(t, ids[1], math.MaxUint64, 0), // both
	}
	resume := func() time.Duration {
		begin := time.Now()
		c := open(t, url, ids[10])
		c.expect(11, n)
		return time.Since(begin)
	}
	underAttack(t, url, crafted, resume)
}

// underAttack times resume alone, then with 1 and with 8 attackers
// connected with the crafted IDs, and logs the ratios.
func underAttack(t *testing.T, url string, crafted []string, resume func() time.Duration) {
	alone := resume()
	for _, attackers := range []int{1, 8} {
		t.Run(fmt.Sprint(attackers, " attackers"), func(t *testing.T) {
			attack(t, url, attackers, crafted)
			took := resume()
			t.Logf("a resume with %d attackers took %v, alone %v: %.2fx", attackers, took, alone, float64(took)/float64(alone))
		})
	}
}

func TestCraftedIDsKafka(t *testing.T) {
	brokers := brokertest.Kafka(t)
	topic := kafkaTopic(t, brokers, 3)
	url := kafkaBridge(t, brokers, topic, bridge.Config{Backlog: 16})
	first := open(t, url, "")
	const keys, rounds = 6, 100
	produce(t, brokers, topic, keys, 1, rounds)
	all := newKeyed(t)
	all.read(first, keys*rounds, 1)
	real := all.ids[0]
	crafted := []string{
		craft(t, real, math.MaxUint64, math.MaxUint64, math.MaxUint64), // negative offsets, as int64
		craft(t, real, 0, 1<<63, 0),
		craft(t, real), // no partition at all
	}
	resume := func() time.Duration {
		begin := time.Now()
		c := open(t, url, all.ids[9])
		got := make(map[string]bool)
		for range keys*rounds - 10 {
			ev := c.next()
			if got[ev.data] || ev.typ != "" {
				t.Fatalf("%+v twice, or a gap", ev)
			}
			got[ev.data] = true
		}
		for _, d := range all.data[10:] {
			if !got[d] {
				t.Fatalf("%s missing after resuming from event 10", d)
			}
		}
		return time.Since(begin)
	}
	underAttack(t, url, crafted, resume)
}

// TestUnopenablePositionFreesItsReader: a position that passes the
// route's shape check (a stream whose partitions may change) but that the
// source can never open (ErrBadPosition) ends its catch-up reader at once:
// its client gets a malformed-id gap, and, with a single catch-up reader
// on the route, a legitimate resume that comes after is served.
func TestUnopenablePositionFreesItsReader(t *testing.T) {
	src := fakesource.New("bad", 2, 1)
	b, err := bridge.New(bridge.Config{Backlog: 4}, bridge.Route{Path: "/f", Source: src, Options: bridge.Options{CatchUpReaders: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, _ := runInMemory(t, b)
	for i := range 20 {
		src.Append(i%2, fmt.Appendf(nil, "m%d", i))
	}
	var ids []string
	events, err := bridge.Tee(ctx, b, "/f", bridge.Origin(b, "/f"))
	if err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		if ev.Data != nil {
			ids = append(ids, ev.ID)
		}
		if len(ids) == 20 {
			break
		}
	}
	// Three partitions on a stream of two: decodes, and passes the shape
	// check, as a Kafka topic may have gained partitions.
	bad := craft(t, ids[0], 1, 1, 1)
	var wg sync.WaitGroup
	var gaps atomic.Int32
	for range 4 {
		wg.Go(func() {
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			events, err := bridge.Tee(tctx, b, "/f", bad)
			if err != nil {
				t.Error(err)
				return
			}
			for ev := range events {
				if ev.Type == esource.GapType && strings.Contains(fmt.Sprint(ev.Data), "malformed-id") {
					gaps.Add(1)
				} else {
					t.Errorf("first event %+v, want a malformed-id gap", ev)
				}
				return
			}
		})
	}
	wg.Wait()
	if n := gaps.Load(); n != 4 {
		t.Fatalf("%d of 4 clients at an unopenable position got a malformed-id gap", n)
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	events, err = bridge.Tee(tctx, b, "/f", ids[1])
	if err != nil {
		t.Fatal(err)
	}
	n := 2
	for ev := range events {
		if ev.Type == esource.GapType {
			t.Fatalf("a gap for a legitimate resume: %+v", ev)
		}
		if ev.Data != nil {
			n++
		}
		if n == 20 {
			break
		}
	}
	if n != 20 {
		t.Fatalf("a legitimate resume after message 2 got up to message %d of 20", n)
	}
}
