// Package brokertest finds the brokers that tests run against. A test
// whose broker does not answer is skipped on a developer's machine and
// fails in CI (CI set), where every broker test must run. It is for tests
// only.
//
// The Kafka and RabbitMQ brokers are shared by the tests of every package,
// which go test runs in parallel. A test that uses one holds its lock
// shared (Kafka, AMQP), and a test that restarts one holds it exclusive
// (LockKafka, LockRabbitMQ): a restart waits for the tests of other
// packages that use the broker, and they wait for it. See lock.go.
package brokertest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Kafka returns the Kafka brokers of the tests: KAFKA_BROKERS, comma
// separated, or 127.0.0.1:9092, which `make test` starts with
// scripts/kafka.sh. It holds the Kafka lock shared until the end of t,
// waiting first for a restart of the broker by another package's test.
func Kafka(t testing.TB) []string {
	t.Helper()
	kafkaLock.share(t)
	brokers := []string{"127.0.0.1:9092"}
	if v := os.Getenv("KAFKA_BROKERS"); v != "" {
		brokers = strings.Split(v, ",")
	}
	require(t, "Kafka", brokers[0], "run scripts/kafka.sh start, or set KAFKA_BROKERS")
	return brokers
}

// AMQP returns the RabbitMQ broker URI of the tests: AMQP_URL, or
// amqp://guest:guest@127.0.0.1:5672/, which `make test` starts with
// scripts/rabbitmq.sh. It holds the RabbitMQ lock shared until the end of
// t, waiting first for a restart of the broker by another package's test.
func AMQP(t testing.TB) string {
	t.Helper()
	rabbitLock.share(t)
	uri := "amqp://guest:guest@127.0.0.1:5672/"
	if v := os.Getenv("AMQP_URL"); v != "" {
		uri = v
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatalf("AMQP_URL: %v", err)
	}
	addr := u.Host
	switch {
	case u.Port() != "":
	case u.Scheme == "amqps":
		addr += ":5671"
	default:
		addr += ":5672"
	}
	require(t, "RabbitMQ", addr, "run scripts/rabbitmq.sh start, or set AMQP_URL")
	return uri
}

// LockRabbitMQ takes the RabbitMQ broker of scripts/rabbitmq.sh (script
// is its path from the test's directory) for t alone, and returns a
// function that restarts it: every connection drops, streams are kept.
// It waits until no test of another package uses the broker, and holds
// the RabbitMQ lock exclusive until the end of t, so tests of other
// packages wait meanwhile. A test that restarts the broker calls it
// first, before anything that uses the broker, and does not call
// t.Parallel. It skips t when AMQP_URL names another broker.
func LockRabbitMQ(t testing.TB, script string) (restart func()) {
	t.Helper()
	if os.Getenv("AMQP_URL") != "" {
		t.Skip("AMQP_URL is set: not restarting that broker")
	}
	rabbitLock.own(t)
	return func() {
		t.Helper()
		if out, err := exec.Command("bash", script, "restart").CombinedOutput(); err != nil {
			t.Fatalf("%s restart: %v\n%s", script, err, out)
		}
	}
}

// LockKafka takes the Kafka broker of scripts/kafka.sh (script is its
// path from the test's directory) for t alone, and returns a function
// that restarts it, keeping its data. It waits until no test of another
// package uses the broker, and holds the Kafka lock exclusive until the
// end of t, so tests of other packages wait meanwhile. A test that
// restarts the broker calls it first, before anything that uses the
// broker, and does not call t.Parallel. It skips t when KAFKA_BROKERS
// names another cluster, and skips or fails it (in CI) when the broker
// was not started by the script.
func LockKafka(t testing.TB, script string) (restart func()) {
	t.Helper()
	if os.Getenv("KAFKA_BROKERS") != "" {
		t.Skip("KAFKA_BROKERS is set: not restarting that cluster")
	}
	if out, err := exec.Command("bash", script, "status").CombinedOutput(); err != nil || !strings.Contains(string(out), "(pid ") {
		msg := fmt.Sprintf("%s cannot restart the broker on 127.0.0.1:9092 (not started by it, or KAFKA_CACHE differs): %s %v", script, strings.TrimSpace(string(out)), err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	kafkaLock.own(t)
	return func() {
		t.Helper()
		if out, err := exec.Command("bash", script, "restart").CombinedOutput(); err != nil {
			t.Fatalf("%s restart: %v\n%s", script, err, out)
		}
	}
}

// require skips or fails t unless something answers at addr.
func require(t testing.TB, what, addr, hint string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		return
	}
	msg := fmt.Sprintf("no %s broker at %s (%v): %s", what, addr, err, hint)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
