package brokertest

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A fakeTest is a test of the given name for a brokerLock: its cleanups
// run when done is called, and Fatal ends the goroutine that calls it.
type fakeTest struct {
	testing.TB
	name string

	mu       sync.Mutex
	cleanups []func()
	failure  string
}

func (f *fakeTest) Name() string { return f.name }
func (f *fakeTest) Helper()      {}
func (f *fakeTest) Cleanup(c func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, c)
}
func (f *fakeTest) Fatal(args ...any) { f.Fatalf("%v", args...) }
func (f *fakeTest) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failure = strings.TrimSpace(format)
	f.mu.Unlock()
	runtime.Goexit()
}

// done runs the cleanups, newest first.
func (f *fakeTest) done() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	f.cleanups = nil
}

// run calls fn(f) in a goroutine of its own (Fatal ends it), and returns a
// channel closed when it returns.
func (f *fakeTest) run(fn func(testing.TB)) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		defer close(c)
		fn(f)
	}()
	return c
}

func newTestLock(t *testing.T) *brokerLock {
	return &brokerLock{name: "Test", file: "lock", dir: t.TempDir()}
}

// otherProcess locks the lock's file ext (".lock" or ".gate") as another
// process would: through an open file of its own. Closing it unlocks.
func otherProcess(t *testing.T, l *brokerLock, ext string, how int) *os.File {
	t.Helper()
	f, err := l.open(ext)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		t.Fatalf("flock %s: %v", ext, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// canLock reports whether another process could lock the lock file now.
func canLock(t *testing.T, l *brokerLock, how int) bool {
	t.Helper()
	f, err := os.Open(filepath.Join(l.dir, "lock.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB) == nil
}

func wait(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still waiting after 5s", what)
	}
}

func blocked(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
		t.Fatalf("%s: did not wait", what)
	case <-time.After(200 * time.Millisecond):
	}
}

// Tests of one process share the lock with each other and with other
// processes, which cannot hold it exclusive meanwhile.
func TestLockShared(t *testing.T) {
	l := newTestLock(t)
	other := otherProcess(t, l, ".lock", syscall.LOCK_SH)
	a, b := &fakeTest{name: "TestA"}, &fakeTest{name: "TestB"}
	wait(t, a.run(l.share), "first share")
	wait(t, b.run(l.share), "second share")
	wait(t, a.run(l.share), "second share of the same test")
	other.Close()
	if canLock(t, l, syscall.LOCK_EX) {
		t.Fatal("exclusive lock taken while tests hold it shared")
	}
	a.done()
	if canLock(t, l, syscall.LOCK_EX) {
		t.Fatal("exclusive lock taken while a test holds it shared")
	}
	b.done()
	if !canLock(t, l, syscall.LOCK_EX) {
		t.Fatal("lock still held after every test is done")
	}
}

// A test that uses the broker waits while another process restarts it.
func TestLockShareWaitsForRestart(t *testing.T) {
	l := newTestLock(t)
	other := otherProcess(t, l, ".lock", syscall.LOCK_EX)
	a := &fakeTest{name: "TestA"}
	c := a.run(l.share)
	blocked(t, c, "share while another process holds the lock exclusive")
	other.Close()
	wait(t, c, "share after the restart")
	a.done()
}

// A restart waits for the tests of other processes, and those that start
// meanwhile wait behind it, in other processes (at the gate) and in this
// one (while it holds the lock shared).
func TestLockRestartFirst(t *testing.T) {
	l := newTestLock(t)
	a, b, c := &fakeTest{name: "TestA"}, &fakeTest{name: "TestB"}, &fakeTest{name: "TestA/sub"}
	wait(t, a.run(l.share), "share")
	// Another process's restart waits for a, holding the gate.
	gate := otherProcess(t, l, ".gate", syscall.LOCK_EX)
	bc := b.run(l.share)
	blocked(t, bc, "a new test while a restart waits")
	wait(t, c.run(l.share), "a subtest of a test that holds the lock")
	c.done()
	a.done()
	// The restart takes the lock and lets the gate go.
	restart := otherProcess(t, l, ".lock", syscall.LOCK_EX)
	gate.Close()
	blocked(t, bc, "a new test during the restart")
	restart.Close()
	wait(t, bc, "a new test after the restart")
	b.done()
}

// A restarting test owns the lock: its own uses of the broker, and its
// subtests', share it; other processes wait until it is done.
func TestLockOwn(t *testing.T) {
	l := newTestLock(t)
	shared := otherProcess(t, l, ".lock", syscall.LOCK_SH)
	r := &fakeTest{name: "TestRestart"}
	c := r.run(l.own)
	blocked(t, c, "own while another process uses the broker")
	shared.Close()
	wait(t, c, "own")
	if r.failure != "" {
		t.Fatal(r.failure)
	}
	wait(t, r.run(l.share), "share by the restarting test")
	sub := &fakeTest{name: "TestRestart/sub"}
	wait(t, sub.run(l.share), "share by a subtest")
	sub.done()
	if canLock(t, l, syscall.LOCK_SH) {
		t.Fatal("another process shares the lock during a restart")
	}
	r.done()
	if !canLock(t, l, syscall.LOCK_EX) {
		t.Fatal("lock still held after the restarting test")
	}
}

// A test cannot take the lock exclusive while another test of its process
// uses the broker: it fails rather than wait for ever.
func TestLockOwnWhileShared(t *testing.T) {
	l := newTestLock(t)
	a, r := &fakeTest{name: "TestA"}, &fakeTest{name: "TestRestart"}
	wait(t, a.run(l.share), "share")
	wait(t, r.run(l.own), "own")
	if !strings.Contains(r.failure, "a test that restarts it takes the lock first") {
		t.Fatalf("own while shared: failure %q", r.failure)
	}
	a.done()
	r.done()
	if !canLock(t, l, syscall.LOCK_EX) {
		t.Fatal("lock still held")
	}
}
