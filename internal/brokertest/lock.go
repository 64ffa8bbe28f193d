package brokertest

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The shared Kafka and RabbitMQ brokers are used by the test binaries of
// several packages at once (go test runs packages in parallel), and a few
// tests restart one of them. A broker lock keeps the two apart: a readers
// and writer lock between processes, made of two files of os.TempDir()
// locked with flock(2), which the kernel releases when a process exits.
//
//   - esbridge-<broker>.lock: every test that uses the broker (Kafka, AMQP)
//     holds it shared, from that call to the end of the test; a test that
//     restarts the broker (LockKafka, LockRabbitMQ) holds it exclusive,
//     from that call, at the start of the test, to its end.
//   - esbridge-<broker>.gate: taken on the way to the lock, and held by a
//     restarting test while it waits for the lock, so that tests starting
//     in other processes wait behind it rather than keep the lock shared
//     for ever.
//
// Within a process, the tests that use a broker hold its lock together
// (one flock of one open file), and a restarting test does not wait for
// itself: its own calls of Kafka or AMQP, and its subtests', join its
// exclusive hold. A test
// of a process that holds the lock shared waits, while a restart of
// another process is waiting, until the process's tests using the broker
// are done, unless the test itself or a test it is a subtest of holds
// the lock already. A restarting test must therefore not run in parallel
// with the other tests of its package that use the broker (which Go
// ensures for a test that does not call t.Parallel: it runs before the
// parallel ones); LockKafka and LockRabbitMQ fail the test, rather than
// wait for ever, if another test of the process holds the lock.

// lockWait bounds the wait for a broker lock: a restart waits for the
// tests of other processes that use the broker to end, the others for
// that restart.
const lockWait = 5 * time.Minute

// A brokerLock is the lock of one broker, as this process holds it.
type brokerLock struct {
	name string // "Kafka", "RabbitMQ"
	file string // the lock file's name, without extension
	dir  string // its directory: os.TempDir() if empty

	mu        sync.Mutex
	f         *os.File       // the lock file, while held
	exclusive bool           // held exclusive (by a restarting test)
	holders   map[string]int // names of the tests holding it, and how many times
	n         int            // sum of holders
}

var (
	kafkaLock  = &brokerLock{name: "Kafka", file: "esbridge-kafka"}
	rabbitLock = &brokerLock{name: "RabbitMQ", file: "esbridge-rabbitmq"}
)

// share holds l shared for t, until t's cleanup.
func (l *brokerLock) share(t testing.TB) {
	t.Helper()
	began := time.Now()
	for {
		l.mu.Lock()
		if l.f == nil {
			err := l.acquire(syscall.LOCK_SH, began)
			if err != nil {
				l.mu.Unlock()
				t.Fatal(err)
			}
			break
		}
		// Held by this process already: join, unless a restart of
		// another process waits and the holders are other tests.
		if l.exclusive || l.heldBy(t.Name()) || l.gateFree() {
			break
		}
		l.mu.Unlock()
		if time.Since(began) > lockWait {
			t.Fatalf("waited %v for the %s lock (%s): a restart of another process waits for the tests of this one that use the broker", lockWait, l.name, l.path(".lock"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.hold(t.Name())
	l.mu.Unlock()
	if d := time.Since(began); d > time.Second {
		t.Logf("waited %v for the %s lock (a restart of the broker)", d.Round(time.Millisecond), l.name)
	}
	t.Cleanup(func() { l.release(t.Name()) })
}

// own holds l exclusive for t, until t's cleanup.
func (l *brokerLock) own(t testing.TB) {
	t.Helper()
	began := time.Now()
	l.mu.Lock()
	if l.f != nil {
		l.mu.Unlock()
		t.Fatalf("%s lock: tests of this process use the broker (%v); a test that restarts it takes the lock first, and does not run in parallel with them", l.name, l.names())
	}
	err := l.acquire(syscall.LOCK_EX, began)
	if err == nil {
		l.exclusive = true
		l.hold(t.Name())
	}
	l.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > time.Second {
		t.Logf("waited %v for the %s lock (the tests of other packages that use the broker)", d.Round(time.Millisecond), l.name)
	}
	t.Cleanup(func() { l.release(t.Name()) })
}

// acquire opens the lock file and locks it (how: LOCK_SH or LOCK_EX) by
// way of the gate. l.mu is held.
func (l *brokerLock) acquire(how int, began time.Time) error {
	gate, err := l.open(".gate")
	if err != nil {
		return err
	}
	defer gate.Close() // unlocks it
	f, err := l.open(".lock")
	if err != nil {
		return err
	}
	for _, s := range []struct {
		f   *os.File
		how int
	}{{gate, syscall.LOCK_EX}, {f, how}} {
		for {
			err := syscall.Flock(int(s.f.Fd()), s.how|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
				f.Close()
				return fmt.Errorf("flock %s: %v", s.f.Name(), err)
			}
			if time.Since(began) > lockWait {
				f.Close()
				return fmt.Errorf("waited %v for the %s lock (%s): %s", lockWait, l.name, s.f.Name(), l.waitingFor(how))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	l.f = f
	return nil
}

func (l *brokerLock) waitingFor(how int) string {
	if how == syscall.LOCK_EX {
		return "tests of other processes use the broker"
	}
	return "a test of another process restarts the broker"
}

// gateFree reports whether no restart of another process waits for l.
// l.mu is held.
func (l *brokerLock) gateFree() bool {
	gate, err := l.open(".gate")
	if err != nil {
		return true // acquire will say
	}
	defer gate.Close()
	return syscall.Flock(int(gate.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}

// heldBy reports whether the test named name, or a test it is a subtest
// of, holds l. l.mu is held.
func (l *brokerLock) heldBy(name string) bool {
	for h := range l.holders {
		if name == h || strings.HasPrefix(name, h+"/") {
			return true
		}
	}
	return false
}

// hold counts a hold of the test named name. l.mu is held.
func (l *brokerLock) hold(name string) {
	if l.holders == nil {
		l.holders = map[string]int{}
	}
	l.holders[name]++
	l.n++
}

// release ends a hold of the test named name, and unlocks the file after
// the last.
func (l *brokerLock) release(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holders[name]--; l.holders[name] == 0 {
		delete(l.holders, name)
	}
	if l.n--; l.n > 0 {
		return
	}
	l.f.Close() // unlocks it
	l.f = nil
	l.exclusive = false
}

func (l *brokerLock) names() []string { return slices.Sorted(maps.Keys(l.holders)) }

func (l *brokerLock) path(ext string) string {
	dir := l.dir
	if dir == "" {
		dir = os.TempDir()
	}
	return filepath.Join(dir, l.file+ext)
}

// open opens (creating it if need be) the lock file or gate: read-only,
// which flock needs no more than, so that the files of another user do.
func (l *brokerLock) open(ext string) (*os.File, error) {
	return os.OpenFile(l.path(ext), os.O_RDONLY|os.O_CREATE, 0o666)
}
