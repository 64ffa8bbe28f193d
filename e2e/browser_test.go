package e2e

// The browser of the tests: one Node.js process per test running
// browser/driver.mjs, which drives one headless Chromium with a fresh user
// data directory, and pages of it.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/progtest"
)

// require skips t, or fails it when CI is set, if err says that what the
// tests need is missing.
func require(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("no %s: %v (e2e/setup.sh installs what the browser tests need)", what, err)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// chromiumPath returns the Chromium of the tests: CHROMIUM, or Debian's.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// An answer is the driver's reply to one command.
type answer struct {
	ID    int             `json:"id"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
}

// A browser is a headless Chromium driven through a driver process.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	answers chan answer
	stderr  *progtest.Buffer
	exited  chan struct{}

	mu     sync.Mutex // one command at a time
	nextID int
}

// launchBrowser starts a driver and its Chromium, with args added to its
// command line, closed at cleanup.
func launchBrowser(t *testing.T, args ...string) *browser {
	t.Helper()
	node, err := exec.LookPath("node")
	require(t, "Node.js", err)
	_, err = os.Stat(filepath.Join("browser", "node_modules", "playwright-core", "package.json"))
	require(t, "playwright-core in e2e/browser", err)
	_, err = os.Stat(chromiumPath())
	require(t, "Chromium (set CHROMIUM to use another)", err)
	// Made before the cleanup that closes the browser is registered, it is
	// removed after.
	userDataDir := t.TempDir()

	b := &browser{t: t, answers: make(chan answer, 16), stderr: &progtest.Buffer{}, exited: make(chan struct{})}
	b.cmd = exec.Command(node, "driver.mjs")
	b.cmd.Dir = "browser"
	// A group of its own, with Chromium, to kill at once if need be.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cmd.Stderr = b.stderr
	if b.stdin, err = b.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go b.read(stdout)
	t.Cleanup(b.close)
	b.call(nil, map[string]any{"cmd": "launch", "executable": chromiumPath(), "userDataDir": userDataDir, "args": append([]string{}, args...)})
	return b
}

// read passes the driver's answers on until its stdout ends.
func (b *browser) read(stdout io.Reader) {
	defer close(b.exited)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var a answer
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			a = answer{ID: -1, Error: fmt.Sprintf("driver: %v: %q", err, sc.Text())}
		}
		b.answers <- a
	}
}

// close ends the driver, which closes Chromium, and logs the driver's
// stderr if the test failed.
func (b *browser) close() {
	b.stdin.Close()
	done := make(chan struct{})
	go func() {
		b.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if b.t.Failed() {
		b.t.Logf("stderr of the browser driver:\n%s", b.stderr.String())
	}
}

// call sends req to the driver and decodes the value of its answer into v,
// unless v is nil. It fails the test if the command fails or takes longer
// than waitFor.
func (b *browser) call(v any, req map[string]any) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	req["id"] = b.nextID
	line, err := json.Marshal(req)
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		b.t.Fatalf("browser driver: %v\n%s", err, b.stderr.String())
	}
	var a answer
	select {
	case a = <-b.answers:
	case <-b.exited:
		b.t.Fatalf("browser driver exited during %s:\n%s", req["cmd"], b.stderr.String())
	case <-time.After(waitFor):
		b.t.Fatalf("browser driver: no answer to %s within %v:\n%s", req["cmd"], waitFor, b.stderr.String())
	}
	switch {
	case a.Error != "":
		b.t.Fatalf("browser driver: %s: %s", req["cmd"], a.Error)
	case a.ID != b.nextID:
		b.t.Fatalf("browser driver: answer %d to command %d", a.ID, b.nextID)
	case v != nil:
		if err := json.Unmarshal(a.Value, v); err != nil {
			b.t.Fatalf("browser driver: %s: %v", req["cmd"], err)
		}
	}
}

// A page is a tab of the browser.
type page struct {
	b *browser
	n int
}

// open opens url in a new page and waits until it has loaded.
func (b *browser) open(url string) *page {
	b.t.Helper()
	p := &page{b: b}
	b.call(&p.n, map[string]any{"cmd": "open", "url": url})
	return p
}

// A cookie is a cookie of the browser, for addCookies.
type cookie struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Domain string `json:"domain"`
	Path   string `json:"path"`
}

// addCookies adds cookies to the browser, or replaces those of the same
// name, domain and path: the pages' next requests carry them.
func (b *browser) addCookies(cookies ...cookie) {
	b.t.Helper()
	b.call(nil, map[string]any{"cmd": "addCookies", "cookies": cookies})
}

// eval evaluates the JavaScript expression expr in the page and decodes
// its value, as JSON, into v unless v is nil.
func (p *page) eval(v any, expr string) {
	p.b.t.Helper()
	p.b.call(v, map[string]any{"cmd": "eval", "page": p.n, "expr": expr})
}

// screenshot saves a PNG of the page at path.
func (p *page) screenshot(path string) {
	p.b.t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		p.b.t.Fatal(err)
	}
	p.b.call(nil, map[string]any{"cmd": "screenshot", "page": p.n, "path": abs})
}

// A record is what the test page (browser/page.html) records for each event
// its EventSource fires.
type record struct {
	Kind  string `json:"kind"`  // "open", "error" or "event"
	Time  int64  `json:"time"`  // ms since the epoch, for open and error
	State int    `json:"state"` // readyState after an error: 0 connecting, 2 closed
	Type  string `json:"type"`  // the event type, for events
	ID    string `json:"id"`    // lastEventId, for events
	Data  string `json:"data"`  // data, for events
}

func (r record) String() string {
	if r.Kind != "event" {
		return fmt.Sprintf("(%s, state %d)", r.Kind, r.State)
	}
	return fmt.Sprintf("%s %q id %q", r.Type, r.Data, r.ID)
}

// recorded returns what the test page has recorded so far.
func (p *page) recorded() []record {
	p.b.t.Helper()
	var rs []record
	p.eval(&rs, "window.recorded")
	return rs
}

// count returns how many records of kind the test page has.
func count(rs []record, kind string) int {
	n := 0
	for _, r := range rs {
		if r.Kind == kind {
			n++
		}
	}
	return n
}

// closedForGood reports whether the EventSource of the records failed for
// good, after a response that was not a stream: it never reconnects then.
func closedForGood(rs []record) bool {
	for _, r := range rs {
		if r.Kind == "error" && r.State == 2 {
			return true
		}
	}
	return false
}

// describe lists records for failure messages, the last ones only.
func describe(rs []record) string {
	const max = 60
	var b strings.Builder
	if len(rs) > max {
		fmt.Fprintf(&b, "... %d records before\n", len(rs)-max)
		rs = rs[len(rs)-max:]
	}
	for _, r := range rs {
		fmt.Fprintln(&b, r)
	}
	return b.String()
}
