// Package brokertest finds the brokers that tests run against. A test
// whose broker does not answer is skipped on a developer's machine and
// fails in CI (CI set), where every broker test must run. It is for tests
// only.
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
// scripts/kafka.sh.
func Kafka(t testing.TB) []string {
	t.Helper()
	brokers := []string{"127.0.0.1:9092"}
	if v := os.Getenv("KAFKA_BROKERS"); v != "" {
		brokers = strings.Split(v, ",")
	}
	require(t, "Kafka", brokers[0], "run scripts/kafka.sh start, or set KAFKA_BROKERS")
	return brokers
}

// AMQP returns the RabbitMQ broker URI of the tests: AMQP_URL, or
// amqp://guest:guest@127.0.0.1:5672/, which `make test` starts with
// scripts/rabbitmq.sh.
func AMQP(t testing.TB) string {
	t.Helper()
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

// RestartRabbitMQ restarts the RabbitMQ broker of scripts/rabbitmq.sh
// (script is its path from the test's directory): every connection drops,
// streams are kept. A test that calls it is skipped when AMQP_URL names
// another broker, and must not run in parallel with other broker tests.
func RestartRabbitMQ(t testing.TB, script string) {
	t.Helper()
	if os.Getenv("AMQP_URL") != "" {
		t.Skip("AMQP_URL is set: not restarting that broker")
	}
	out, err := exec.Command("bash", script, "restart").CombinedOutput()
	if err != nil {
		t.Fatalf("%s restart: %v\n%s", script, err, out)
	}
}

// RestartKafka restarts the Kafka broker of scripts/kafka.sh, keeping its
// data (script is its path from the test's directory). A test that calls
// it is skipped when KAFKA_BROKERS names another cluster, skipped or
// failed (in CI) when the broker was not started by the script, and must
// not run in parallel with other broker tests.
func RestartKafka(t testing.TB, script string) {
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
	if out, err := exec.Command("bash", script, "restart").CombinedOutput(); err != nil {
		t.Fatalf("%s restart: %v\n%s", script, err, out)
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
