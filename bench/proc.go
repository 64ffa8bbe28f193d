// This file holds the protocol between the orchestrator and its two child
// processes (the command re-executes itself with -role=server or
// -role=client): one JSON command per line on the child's stdin, one JSON
// reply per line on its stdout. The child's stderr is passed through with
// -v.

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// A command is sent by the orchestrator to a child. Each command gets one
// reply, a JSON object whose type depends on the command.
type command struct {
	Cmd string `json:"cmd"`

	// Server commands: "warm" (On: publish a warm-up event every 50 ms, or
	// stop), "closed" (closed-loop publisher), "paced" (fixed-rate
	// publisher), "mem" (memory after GC), "prof" (start a CPU profile to
	// CPUProfile, or stop it; the reply is the process's CPU time).
	On           bool          `json:"on,omitempty"`
	Window       int           `json:"window,omitempty"`
	Rate         int           `json:"rate,omitempty"`
	Duration     time.Duration `json:"duration,omitempty"`
	MaxEvents    uint64        `json:"maxEvents,omitempty"`
	Size         int           `json:"size,omitempty"`
	StallTimeout time.Duration `json:"stallTimeout,omitempty"`
	CPUProfile   string        `json:"cpuProfile,omitempty"`
	HeapProfile  string        `json:"heapProfile,omitempty"`

	// Client commands: "connect" (open N streams, plus a non-reading one
	// with Stall, and wait until each has received a warm-up event),
	// "report" (statistics; with Reset, the latencies start anew).
	N        int    `json:"n,omitempty"`
	Stall    bool   `json:"stall,omitempty"`
	Latency  bool   `json:"latency,omitempty"`
	BufSize  int    `json:"bufSize,omitempty"`
	URL      string `json:"url,omitempty"`
	Progress string `json:"progress,omitempty"`
	// Broker makes the streams read the bench's broker payloads (see
	// broker.go): the sequence number is in the data, not the event ID.
	Broker bool `json:"broker,omitempty"`
	Reset  bool `json:"reset,omitempty"`
	// Keys, with Filter, makes stream i ask for ?key=k{i%Keys} (scenario
	// F): it counts only the sequence numbers seq with seq%Keys == i%Keys
	// and reports any other as a mismatch. Published, in "report", is the
	// number of messages produced, for the filtered streams' counts.
	Keys      int    `json:"keys,omitempty"`
	Filter    bool   `json:"filter,omitempty"`
	Published uint64 `json:"published,omitempty"`
	// Direct, in "direct", is the stream to read with a direct consumer
	// of the broker beside the streams (scenario L, added.go); "report"
	// then reports it apart.
	Direct *directSpec `json:"direct,omitempty"`
	// First, in "connect" with Broker and Latency, makes the client
	// process time each message's first receipt by any of its streams
	// too (scenario L): "report" gives their percentiles apart.
	First bool `json:"first,omitempty"`
	// TLS is how "connect" reaches the server: off (plain HTTP/1.1), h1
	// (HTTP/1.1 over TLS) or h2 (HTTP/2 over TLS); see tls.go.
	TLS string `json:"tls,omitempty"`
}

// hello is the first line a server child writes: where it listens.
type hello struct {
	HTTP     string `json:"http"`     // the SSE endpoint's host:port
	Progress string `json:"progress"` // where clients report progress
}

// A child is a running child process of the orchestrator.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan []byte // reply lines; closed when stdout ends
}

// startChild re-executes this binary with args.
func startChild(name string, verbose bool, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	if verbose {
		cmd.Stderr = os.Stderr
	}
	return startCmd(name, cmd)
}

// errTimeout is returned by call when a child does not reply in time.
var errTimeout = errors.New("child did not reply in time")

// call sends cmd (unless cmd.Cmd is empty) and decodes the next reply line
// into reply, waiting at most timeout.
func (c *child) call(cmd command, reply any, timeout time.Duration) error {
	if cmd.Cmd != "" {
		b, _ := json.Marshal(cmd) // a command always encodes
		if _, err := c.stdin.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("%s %s: %w", c.name, cmd.Cmd, err)
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			return fmt.Errorf("%s %s: child exited", c.name, cmd.Cmd)
		}
		var e struct{ Error string }
		if json.Unmarshal(line, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s", c.name, cmd.Cmd, e.Error)
		}
		if err := json.Unmarshal(line, reply); err != nil {
			return fmt.Errorf("%s %s: reply %q: %w", c.name, cmd.Cmd, line, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%s %s: %w (%v)", c.name, cmd.Cmd, errTimeout, timeout)
	}
}

// kill ends the child process and waits for it.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// replier answers commands in a child process.
type replier struct {
	enc *json.Encoder
}

func (r replier) reply(v any) {
	if err := r.enc.Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "bench: reply:", err)
		os.Exit(1)
	}
}

func (r replier) fail(err error) {
	r.reply(struct {
		Error string `json:"error"`
	}{err.Error()})
}

// commands yields the commands read from stdin until it ends.
func commands(yield func(command) bool) {
	dec := json.NewDecoder(os.Stdin)
	for {
		var c command
		if err := dec.Decode(&c); err != nil {
			return
		}
		if !yield(c) {
			return
		}
	}
}
