package brokertest

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A KafkaCluster is the three-node Kafka cluster of
// scripts/kafka-cluster.sh, for the tests that kill, freeze and restart
// its nodes (1, 2 and 3, as the script numbers them).
type KafkaCluster struct {
	Brokers []string // the nodes' addresses, node 1's first

	t      testing.TB
	script string
}

// clusterLock keeps the cluster to one test at a time, across packages.
var clusterLock = &brokerLock{name: "Kafka cluster", file: "esbridge-kafka-cluster"}

// NewKafkaCluster returns the cluster of scripts/kafka-cluster.sh (script
// is its path from the test's directory), which `make test` starts. It
// skips t when the cluster does not answer, or fails it when CI is set,
// and holds the cluster for t alone until its end. The cluster may be
// left with nodes stopped by an earlier test: NewKafkaCluster starts them
// again.
func NewKafkaCluster(t testing.TB, script string) *KafkaCluster {
	t.Helper()
	c := &KafkaCluster{t: t, script: script}
	out, err := exec.Command("bash", script, "brokers").Output()
	if err != nil {
		t.Fatalf("%s brokers: %v", script, err)
	}
	c.Brokers = strings.Split(strings.TrimSpace(string(out)), ",")
	require(t, "the Kafka cluster", c.Brokers[0], "run scripts/kafka-cluster.sh start")
	clusterLock.own(t)
	for n := 1; n <= len(c.Brokers); n++ {
		c.Start(n)
	}
	t.Cleanup(func() {
		for n := 1; n <= len(c.Brokers); n++ {
			if pid := c.pid(n); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGCONT) // a node this test froze
			}
			c.Start(n)
		}
	})
	return c
}

// run runs the script with args and returns its output, failing t on an
// error.
func (c *KafkaCluster) run(args ...string) string {
	c.t.Helper()
	out, err := exec.Command("bash", append([]string{c.script}, args...)...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		c.t.Fatalf("%s %s: %v\n%s", c.script, strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// pid returns node n's process ID, or 0 if it is not running.
func (c *KafkaCluster) pid(n int) int {
	out, err := exec.Command("bash", c.script, "pid", strconv.Itoa(n)).Output()
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return pid
}

// signal sends sig to node n, which must be running.
func (c *KafkaCluster) signal(n int, sig syscall.Signal) {
	c.t.Helper()
	pid := c.pid(n)
	if pid == 0 {
		c.t.Fatalf("Kafka node %d is not running", n)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		c.t.Fatalf("Kafka node %d: %v: %v", n, sig, err)
	}
}

// Kill kills node n at once (SIGKILL), as a crash would.
func (c *KafkaCluster) Kill(n int) {
	c.t.Helper()
	c.signal(n, syscall.SIGKILL)
}

// Freeze stops node n's process (SIGSTOP): its connections stay open and
// nothing answers, until Thaw.
func (c *KafkaCluster) Freeze(n int) {
	c.t.Helper()
	c.signal(n, syscall.SIGSTOP)
}

// Thaw resumes node n after Freeze (SIGCONT).
func (c *KafkaCluster) Thaw(n int) {
	c.t.Helper()
	c.signal(n, syscall.SIGCONT)
}

// Stop stops node n cleanly (SIGTERM: a controlled shutdown, which moves
// its leaderships first) and waits until it has exited.
func (c *KafkaCluster) Stop(n int) {
	c.t.Helper()
	c.run("stop-node", strconv.Itoa(n))
}

// Start starts node n on its storage, unless it is running, and waits
// until it serves.
func (c *KafkaCluster) Start(n int) {
	c.t.Helper()
	c.run("start-node", strconv.Itoa(n))
}

// Node returns the number of the node at addr, one of Brokers; 0 if none.
func (c *KafkaCluster) Node(addr string) int {
	for i, b := range c.Brokers {
		if b == addr {
			return i + 1
		}
	}
	return 0
}
