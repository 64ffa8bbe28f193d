package kafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// The cluster test runs against the three-node cluster of
// scripts/kafka-cluster.sh: a topic of 6 partitions, replicated 3 times
// with min.insync.replicas=2, written to all along, each message with
// acks=all, and read by one reader the way the bridge reads: reopened at
// its position after an error. Nodes are killed, stopped, frozen and
// restarted, and partition leaders moved back to their preferred nodes.
//
// It checks what a client would: every acknowledged message is read,
// every offset once and in order; a partition whose leader is down holds
// back no other (the reader never fails); the reader tells which
// partitions it cannot read. It
// logs, for each fault and partition, the longest delay from a message's
// acknowledgement to its reading and the longest pause between two
// messages read: the figures of docs/performance.md.
//
// KAFKA_FREEZE sets how long a node stays frozen (default 12s: longer
// than the cluster's broker session timeout of 9s, so that it loses its
// leaderships).

const (
	clusterPartitions = 6
	// clusterInterval is the pause between two messages of a partition.
	clusterInterval = 20 * time.Millisecond
)

func TestClusterFaults(t *testing.T) {
	c := brokertest.NewKafkaCluster(t, "../../scripts/kafka-cluster.sh")
	b := newTestBroker(t, c.Brokers, 3)
	topic := b.topic(clusterPartitions)
	freeze := 12 * time.Second
	if v := os.Getenv("KAFKA_FREEZE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("KAFKA_FREEZE: %v", err)
		}
		freeze = d
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := newClusterRun(clusterPartitions)
	src := b.source(topic, Config{})
	rd := b.readAlong(ctx, src, run)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for p := range clusterPartitions {
		wg.Go(func() { b.produceAlong(ctx, topic, p, run) })
	}

	phase := func(name string, fault func() (down int)) {
		t.Helper()
		before := b.leaders(topic)
		from := time.Now()
		down := fault()
		acked := time.Now()
		// Every partition has had messages acknowledged since the fault,
		// and the reader has read them all.
		poll.UntilNil(t, 90*time.Second, name+": every partition acknowledged and read since", func() error {
			return run.caughtUp(acked)
		})
		run.report(t, name, from, before, c, down)
	}
	phase("steady", func() int { return 0 })

	lead := b.leaders(topic)
	n := busiest(lead, c)
	phase("SIGKILL of the leader of most partitions", func() int {
		c.Kill(n)
		// The dead node's partitions wait for Kafka to elect new leaders
		// (once it has missed its heartbeats to the controller, 9 s), and
		// the reader says so; the others read on.
		dead := deadPartitions(lead, c, n)
		poll.UntilNil(t, 60*time.Second, "the reader tells the dead leader's partitions stalled, and only them", func() error {
			return stalledAre(rd, dead)
		})
		// A client resuming meanwhile need not wait for the election: its
		// reader opens, and reads the partitions with a live leader.
		pos := run.position()
		octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := src.Open(octx, bridge.Start{Position: pos})
		ocancel()
		if err != nil {
			t.Fatalf("open at %v while a leader is down: %v", pos, err)
		}
		r.Close()
		// An offset that the dead leader's partition never reached, which
		// Open could not check, is found out once it has a new leader.
		ahead := slices.Clone(pos)
		ahead[dead[0]] += 1000
		octx, ocancel = context.WithTimeout(ctx, 60*time.Second)
		defer ocancel()
		r, err = src.Open(octx, bridge.Start{Position: ahead})
		for err == nil {
			_, err = r.Next(octx)
		}
		if r != nil {
			r.Close()
		}
		if !errors.Is(err, bridge.ErrAhead) {
			t.Errorf("open at %v, ahead of partition %d, while its leader is down: %v, want an error wrapping ErrAhead", ahead, dead[0], err)
		}
		return n
	})
	phase("restart of the killed node", func() int { c.Start(n); return 0 })
	phase("preferred-leader election", func() int { b.electPreferred(topic); return 0 })

	lead = b.leaders(topic)
	n = busiest(lead, c)
	phase("clean shutdown of a leader", func() int { c.Stop(n); return n })
	phase("restart, and preferred-leader election", func() int { c.Start(n); b.electPreferred(topic); return 0 })

	lead = b.leaders(topic)
	n = busiest(lead, c)
	phase(fmt.Sprintf("SIGSTOP of a leader for %v", freeze), func() int {
		c.Freeze(n)
		frozen := time.Now()
		poll.UntilNil(t, 60*time.Second, "the reader tells the frozen leader's partitions stalled, and only them", func() error {
			return stalledAre(rd, deadPartitions(lead, c, n))
		})
		time.Sleep(time.Until(frozen.Add(freeze))) // the fault itself: the node stays frozen
		c.Thaw(n)
		return n
	})
	phase("preferred-leader election after the freeze", func() int { b.electPreferred(topic); return 0 })

	cancel()
	wg.Wait()
	if err := run.check(); err != nil {
		t.Error(err)
	}
	// No partition's failure took the others down with it.
	if run.reopens > 0 {
		t.Errorf("the reader failed %d times, the last with %s", run.reopens, run.lastError)
	}
}

// A clusterRun records what was acknowledged and read, per partition.
type clusterRun struct {
	mu        sync.Mutex
	acked     [][]time.Time // by partition and message number: when it was acknowledged
	read      [][]time.Time // by partition and message number: when it was first read
	readAt    [][]time.Time // by partition: when each message was read, in order
	next      []int64       // by partition: the offset the reader must read next
	errs      []string
	reopens   int
	lastError string
}

func newClusterRun(n int) *clusterRun {
	return &clusterRun{acked: make([][]time.Time, n), read: make([][]time.Time, n), readAt: make([][]time.Time, n), next: make([]int64, n)}
}

// produceAlong writes message after message to partition p until ctx
// ends, each with acks=all, trying each again until it is acknowledged.
// It writes over a connection to the partition's leader of its own, as
// kafka-go's transport waits for a dead broker when it holds its control
// connection.
func (b *testBroker) produceAlong(ctx context.Context, topic string, p int, run *clusterRun) {
	var conn *kafka.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for seq := 0; ctx.Err() == nil; seq++ {
		for ctx.Err() == nil {
			var err error
			if conn == nil {
				conn, err = b.dialLeader(ctx, topic, p)
			}
			if err == nil {
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				_, err = conn.WriteMessages(kafka.Message{Value: []byte(strconv.Itoa(seq))})
			}
			if err == nil {
				run.mu.Lock()
				run.acked[p] = append(run.acked[p], time.Now())
				run.mu.Unlock()
				break
			}
			if conn != nil {
				conn.Close()
				conn = nil
			}
			sleep(ctx, 50*time.Millisecond)
		}
		sleep(ctx, clusterInterval)
	}
}

// dialLeader connects to partition p's leader, asking each node in turn
// for it, and sets the connection to write with acks=all.
func (b *testBroker) dialLeader(ctx context.Context, topic string, p int) (*kafka.Conn, error) {
	var err error
	for _, addr := range b.brokers {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		var conn *kafka.Conn
		conn, err = (&kafka.Dialer{Timeout: time.Second}).DialLeader(dctx, "tcp", addr, topic, p)
		cancel()
		if err == nil {
			if err = conn.SetRequiredAcks(-1); err == nil {
				return conn, nil
			}
			conn.Close()
		}
	}
	return nil, err
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// readAlong reads src from its head until ctx ends, reopening the reader
// at its position after an error as the bridge does, and records every
// message in run. It returns a function that reports the reader's
// stalled partitions.
func (b *testBroker) readAlong(ctx context.Context, src *Source, run *clusterRun) func() []bridge.Stall {
	open := func(start bridge.Start) bridge.Reader {
		for ctx.Err() == nil {
			octx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := src.Open(octx, start)
			cancel()
			if err == nil {
				return r
			}
			run.mu.Lock()
			run.lastError = err.Error()
			run.mu.Unlock()
			sleep(ctx, 100*time.Millisecond)
		}
		return nil
	}
	first := open(bridge.Start{})
	if first == nil {
		b.t.Fatal("the topic cannot be opened")
	}
	for p, o := range first.Position() {
		run.next[p] = int64(o)
	}
	var mu sync.Mutex
	current := first
	go func() {
		r := first
		defer func() { r.Close() }()
		for {
			m, err := r.Next(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				pos := r.Position()
				r.Close()
				run.mu.Lock()
				run.reopens++
				run.lastError = err.Error()
				run.mu.Unlock()
				if r = open(startAt(pos)); r == nil {
					return
				}
				mu.Lock()
				current = r
				mu.Unlock()
				continue
			}
			run.record(m)
		}
	}()
	return func() []bridge.Stall {
		mu.Lock()
		r := current
		mu.Unlock()
		if s, ok := r.(bridge.Staller); ok {
			return s.Stalled()
		}
		return nil
	}
}

func startAt(pos bridge.Position) bridge.Start { return bridge.Start{Position: pos} }

// position returns the position the reader has read up to.
func (run *clusterRun) position() bridge.Position {
	run.mu.Lock()
	defer run.mu.Unlock()
	pos := make(bridge.Position, len(run.next))
	for p, o := range run.next {
		pos[p] = uint64(o)
	}
	return pos
}

// record checks and records a message read.
func (run *clusterRun) record(m bridge.Message) {
	now := time.Now()
	run.mu.Lock()
	defer run.mu.Unlock()
	p := m.Partition
	if int64(m.Offset) != run.next[p] {
		run.errs = append(run.errs, fmt.Sprintf("partition %d: offset %d read, %d expected", p, m.Offset, run.next[p]))
	}
	run.next[p] = int64(m.Offset) + 1
	run.readAt[p] = append(run.readAt[p], now)
	seq, err := strconv.Atoi(string(m.Data))
	if err != nil {
		run.errs = append(run.errs, fmt.Sprintf("partition %d offset %d: %q", p, m.Offset, m.Data))
		return
	}
	for len(run.read[p]) <= seq {
		run.read[p] = append(run.read[p], time.Time{})
	}
	if run.read[p][seq].IsZero() { // a message written twice, by a retried produce, is read twice
		run.read[p][seq] = now
	}
}

// caughtUp returns nil once every partition has had a message
// acknowledged after t, and every message acknowledged has been read.
func (run *clusterRun) caughtUp(t time.Time) error {
	run.mu.Lock()
	defer run.mu.Unlock()
	for p, acked := range run.acked {
		if len(acked) == 0 || acked[len(acked)-1].Before(t) {
			return fmt.Errorf("partition %d: nothing acknowledged since (last error %s)", p, run.lastError)
		}
		for seq := range acked {
			if seq >= len(run.read[p]) || run.read[p][seq].IsZero() {
				return fmt.Errorf("partition %d: message %d of %d acknowledged not read (last error %s)", p, seq, len(acked), run.lastError)
			}
		}
	}
	return nil
}

// report logs, for each partition, the longest delay from the
// acknowledgement of a message acknowledged since from to its reading,
// and the longest pause between two messages read since from.
func (run *clusterRun) report(t *testing.T, name string, from time.Time, leaders []string, c *brokertest.KafkaCluster, down int) {
	t.Helper()
	run.mu.Lock()
	defer run.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s (node %d), reopens so far %d:\n", name, down, run.reopens)
	for p := range run.acked {
		var delay time.Duration
		for seq, at := range run.acked[p] {
			if at.Before(from) || seq >= len(run.read[p]) {
				continue
			}
			delay = max(delay, run.read[p][seq].Sub(at))
		}
		var pause time.Duration
		last := from
		for _, at := range run.readAt[p] {
			if at.Before(from) {
				continue
			}
			pause = max(pause, at.Sub(last))
			last = at
		}
		mark := ""
		if down != 0 && c.Node(leaders[p]) == down {
			mark = " (led by the node at fault)"
		}
		fmt.Fprintf(&b, "  partition %d: longest delay %v, longest pause %v%s\n", p, delay.Round(time.Millisecond), pause.Round(time.Millisecond), mark)
	}
	t.Log(b.String())
}

// check returns the errors of the offsets read.
func (run *clusterRun) check() error {
	run.mu.Lock()
	defer run.mu.Unlock()
	if len(run.errs) > 0 {
		return fmt.Errorf("%d errors, the first: %s", len(run.errs), strings.Join(run.errs[:min(len(run.errs), 10)], "; "))
	}
	return nil
}

// leaders returns the address of each partition's leader, by partition,
// once every partition has one. It asks each node in turn, as kafka-go's
// transport waits for a dead broker when it holds its control connection.
func (b *testBroker) leaders(topic string) []string {
	t := b.t
	t.Helper()
	var leaders []string
	poll.UntilNil(t, 60*time.Second, "every partition has a leader", func() error {
		var err error
		for _, addr := range b.brokers {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var ps []kafka.Partition
			ps, err = (&kafka.Dialer{Timeout: 2 * time.Second}).LookupPartitions(ctx, "tcp", addr, topic)
			cancel()
			if err != nil {
				continue
			}
			leaders = make([]string, len(ps))
			for _, p := range ps {
				if p.Leader.Host == "" || p.ID < 0 || p.ID >= len(ps) {
					return fmt.Errorf("partition %d has no leader", p.ID)
				}
				leaders[p.ID] = fmt.Sprintf("%s:%d", p.Leader.Host, p.Leader.Port)
			}
			return nil
		}
		return err
	})
	return leaders
}

// electPreferred moves the leadership of every partition of topic back to
// its preferred replica.
func (b *testBroker) electPreferred(topic string) {
	t := b.t
	t.Helper()
	poll.UntilNil(t, 60*time.Second, "a preferred-leader election succeeds", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		all := make([]int, clusterPartitions)
		for i := range all {
			all[i] = i
		}
		res, err := b.client.ElectLeaders(ctx, &kafka.ElectLeadersRequest{Topic: topic, Partitions: all, Timeout: 5 * time.Second})
		if err == nil {
			err = res.Error
		}
		if err != nil {
			return err
		}
		for _, r := range res.PartitionResults {
			// ELECTION_NOT_NEEDED: the partition is led by its preferred
			// replica already.
			if r.Error != nil && !errors.Is(r.Error, kafka.ElectionNotNeeded) {
				return fmt.Errorf("partition %d: %w", r.Partition, r.Error)
			}
		}
		return nil
	})
}

// busiest returns the node that leads the most partitions.
func busiest(leaders []string, c *brokertest.KafkaCluster) int {
	count := map[int]int{}
	for _, l := range leaders {
		count[c.Node(l)]++
	}
	best := 1
	for n, k := range count {
		if k > count[best] || k == count[best] && n < best {
			best = n
		}
	}
	return best
}

// deadPartitions returns the partitions that node n leads.
func deadPartitions(leaders []string, c *brokertest.KafkaCluster, n int) []int {
	var ps []int
	for p, l := range leaders {
		if c.Node(l) == n {
			ps = append(ps, p)
		}
	}
	return ps
}

// stalledAre returns nil if the reader tells exactly these partitions
// stalled.
func stalledAre(stalled func() []bridge.Stall, want []int) error {
	var got []int
	for _, s := range stalled() {
		got = append(got, s.Partition)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return fmt.Errorf("stalled partitions %v, want %v", got, want)
	}
	return nil
}
