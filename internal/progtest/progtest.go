// Package progtest is the harness of the tests that run the esbridge
// program as a process (cmd/esbridge, e2e): it builds the program once per
// test binary (Build), starts it with flags and environment (Start,
// Listen), waits for its address, /readyz or a log line, stops it with
// SIGTERM, and logs its output when a test fails (Proc). It is for tests
// only.
package progtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// A Build is the esbridge program, built at first use into a directory of
// its own, with the race detector if Race is set. Remove deletes it.
type Build struct {
	Race bool

	once sync.Once
	dir  string
	path string
	err  error
}

// Path returns the program's path, building it at the first call; a build
// error fails t.
func (b *Build) Path(t testing.TB) string {
	t.Helper()
	b.once.Do(func() { b.path, b.err = b.build() })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func (b *Build) build() (string, error) {
	dir, err := os.MkdirTemp("", "esbridge-test-")
	if err != nil {
		return "", err
	}
	b.dir = dir
	path := filepath.Join(dir, "esbridge")
	args := []string{"build"}
	if b.Race {
		args = append(args, "-race")
	}
	args = append(args, "-o", path, "github.com/esbridge/esbridge/cmd/esbridge")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return path, nil
}

// Remove deletes the built program. Call it from TestMain, after m.Run.
func (b *Build) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// A Buffer collects a process's output; it is safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
