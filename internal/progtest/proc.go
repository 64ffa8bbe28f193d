package progtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/poll"
)

// Timeout bounds every wait of a Proc for something that should happen:
// that it listens, is ready, logs a line, exits.
const Timeout = 20 * time.Second

// A Proc is a running esbridge process, its stdout and stderr captured
// together.
type Proc struct {
	Addr string // the host:port it listens on, once known (Listen)

	t      testing.TB
	args   []string
	cmd    *exec.Cmd
	output Buffer
	exited chan struct{} // closed when the process has exited
	state  *os.ProcessState
}

// An Option changes how Start runs the program.
type Option func(*exec.Cmd)

// Env adds kv ("KEY=value") to the program's environment.
func Env(kv ...string) Option {
	return func(c *exec.Cmd) { c.Env = append(c.Env, kv...) }
}

// Start starts the program bin with args, without waiting for anything.
// At the end of t it is stopped (SIGTERM, then SIGKILL after Timeout) and
// t fails if the race detector reported a race in it; if t failed, its
// output is logged.
func Start(t testing.TB, bin string, args []string, opts ...Option) *Proc {
	t.Helper()
	p := &Proc{t: t, args: args, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	// The race detector waits a second at exit unless told not to.
	p.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	for _, o := range opts {
		o(p.cmd)
	}
	p.cmd.Stderr = &p.output
	p.cmd.Stdout = &p.output
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Terminate()
		if strings.Contains(p.Output(), "DATA RACE") {
			t.Errorf("the race detector found a data race in esbridge")
		}
		if t.Failed() {
			t.Logf("output of esbridge %s:\n%s", strings.Join(p.args, " "), p.Output())
		}
	})
	return p
}

// listenRE finds the address in the startup line, in text or JSON logs.
var listenRE = regexp.MustCompile(`msg="esbridge listening" addr=(\S+)|"msg":"esbridge listening","addr":"([^"]+)"`)

// Listen starts bin with args as Start does, and waits until it logs the
// address it listens on, which it sets as Addr. Pass "-listen",
// "127.0.0.1:0" in args for a free port.
func Listen(t testing.TB, bin string, args []string, opts ...Option) *Proc {
	t.Helper()
	p := Start(t, bin, args, opts...)
	poll.Until(t, Timeout, "esbridge "+strings.Join(args, " ")+" listens", func() bool {
		if m := listenRE.FindStringSubmatch(p.Output()); m != nil {
			p.Addr = m[1] + m[2]
			return true
		}
		select {
		case <-p.exited:
			t.Fatalf("esbridge %s exited before listening (%v):\n%s", strings.Join(args, " "), p.state, p.Output())
		default:
		}
		return false
	})
	return p
}

// Output returns what the process wrote so far, stdout and stderr.
func (p *Proc) Output() string { return p.output.String() }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// State returns how the process exited, once Exited is closed.
func (p *Proc) State() *os.ProcessState {
	<-p.exited
	return p.state
}

// Pid returns the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// URL returns the URL of path on the process's listener.
func (p *Proc) URL(path string) string { return "http://" + p.Addr + path }

// Port returns the port the process listens on.
func (p *Proc) Port() string {
	_, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		p.t.Fatal(err)
	}
	return port
}

// Signal sends sig to the process, if it still runs.
func (p *Proc) Signal(sig os.Signal) {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(sig)
	}
}

// Wait waits up to d for the process to exit and returns its exit code.
func (p *Proc) Wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.state.ExitCode()
	case <-time.After(d):
		p.t.Fatalf("esbridge did not exit within %v:\n%s", d, p.Output())
		return -1
	}
}

// Stop ends the process with SIGTERM and checks that it exits 0 within
// Timeout.
func (p *Proc) Stop() {
	p.t.Helper()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(Timeout); code != 0 {
		p.t.Fatalf("esbridge exited with status %d after SIGTERM:\n%s", code, p.Output())
	}
}

// Terminate ends the process gently, with SIGTERM, and with SIGKILL if it
// has not exited within Timeout; it returns once it has exited.
func (p *Proc) Terminate() {
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(Timeout):
	}
	p.Kill()
}

// Kill ends the process with SIGKILL, as a crash would, and returns once
// it has exited.
func (p *Proc) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.exited
}

// Get does a plain GET of path on the process's listener and returns the
// status, the body and the header; an error fails the test.
func (p *Proc) Get(path string) (int, string, http.Header) {
	p.t.Helper()
	code, body, header, err := p.get(path, Timeout)
	if err != nil {
		p.t.Fatal(err)
	}
	return code, body, header
}

func (p *Proc) get(path string, timeout time.Duration) (int, string, http.Header, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL(path), nil)
	if err != nil {
		return 0, "", nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", nil, fmt.Errorf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", nil, fmt.Errorf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, string(body), resp.Header, nil
}

// WaitReadyz polls /readyz until it answers want.
func (p *Proc) WaitReadyz(want int) {
	p.t.Helper()
	poll.UntilNil(p.t, Timeout, fmt.Sprintf("/readyz of esbridge at %s answers %d", p.Addr, want), func() error {
		code, body, _, err := p.get("/readyz", 2*time.Second)
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("it answers %d %q", code, strings.TrimSpace(body))
		}
		return nil
	})
}

// WaitLog waits until the process has written substr n times.
func (p *Proc) WaitLog(substr string, n int) {
	p.t.Helper()
	if !poll.Wait(Timeout, func() bool { return strings.Count(p.Output(), substr) >= n }) {
		p.t.Fatalf("esbridge did not log %q %d times within %v:\n%s", substr, n, Timeout, p.Output())
	}
}
