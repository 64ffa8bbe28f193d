// Package brokertest finds the brokers that tests run against. A test
// whose broker does not answer is skipped on a developer's machine and
// fails in CI (CI set), where every broker test must run. It is for tests
// only.
package brokertest

import (
	"fmt"
	"net"
	"os"
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
