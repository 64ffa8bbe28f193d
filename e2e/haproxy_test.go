package e2e

// HAProxy, Debian's package, in front of esbridge instances, run by the
// test with the configuration of docs/operations.md ("Behind a load
// balancer").

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/progtest"
)

// haproxyConfig returns HAProxy's configuration for SSE as
// docs/operations.md gives it ("Behind a load balancer"), the one home of
// it, made to run here: its frontend on 127.0.0.1:port, servers (host:port)
// in its backend, maxconn connections at most, each response's server in
// its X-Server header, and a statistics page on 127.0.0.1:statsPort.
func haproxyConfig(t *testing.T, port, statsPort, maxconn int, servers []string) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "\n## Behind a load balancer\n")
	_, block, _ := strings.Cut(section, "\n```\n")
	block, _, ok := strings.Cut(block, "\n```\n")
	if !ok || !strings.HasPrefix(block, "global\n") {
		t.Fatal("docs/operations.md: no HAProxy configuration block under \"## Behind a load balancer\"")
	}
	replace := map[string]string{
		"bind :80":      "bind 127.0.0.1:" + strconv.Itoa(port),
		"maxconn 20000": "maxconn " + strconv.Itoa(maxconn),
	}
	var cfg strings.Builder
	replaced := 0
	for line := range strings.Lines(block + "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "server ") {
			continue // the docs' servers
		}
		if r, ok := replace[trimmed]; ok {
			line = strings.Replace(line, trimmed, r, 1)
			replaced++
		}
		cfg.WriteString(line)
	}
	if replaced < len(replace) {
		t.Fatalf("docs/operations.md: the HAProxy configuration has changed: want the lines %q in it", slices.Collect(maps.Keys(replace)))
	}
	if !strings.HasSuffix(strings.TrimSpace(block), "server esbridge2 10.0.0.12:8080") {
		t.Fatal("docs/operations.md: the HAProxy configuration no longer ends with the backend's servers")
	}
	// Which server answered, for the tests' failure messages.
	cfg.WriteString("    http-response set-header X-Server %s\n")
	for i, addr := range servers {
		fmt.Fprintf(&cfg, "    server esbridge%d %s\n", i, addr)
	}
	fmt.Fprintf(&cfg, "\nfrontend stats\n    bind 127.0.0.1:%d\n    stats enable\n    stats uri /stats\n", statsPort)
	return cfg.String()
}

// An haproxy is a running HAProxy.
type haproxy struct {
	t         *testing.T
	port      int // of the frontend
	statsPort int
	output    progtest.Buffer
}

// haproxyPath returns the path of the haproxy program (e2e/setup.sh
// installs it), or skips t, or fails it under CI.
func haproxyPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("haproxy")
	if err != nil {
		path, err = exec.LookPath("/usr/sbin/haproxy") // not in a user's PATH
	}
	if err != nil {
		msg := "no haproxy (apt-get install haproxy, or run e2e/setup.sh)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// startHAProxy starts HAProxy in front of servers (host:port), for
// clients connections at most, on ports of its own, and waits until it
// serves its statistics. It is stopped at cleanup.
func startHAProxy(t *testing.T, clients int, servers []string) *haproxy {
	t.Helper()
	bin := haproxyPath(t)
	h := &haproxy{t: t, port: brokertest.StablePort(t), statsPort: brokertest.StablePort(t)}
	// Each client has a connection to HAProxy and one from it.
	cfg := haproxyConfig(t, h.port, h.statsPort, 2*clients+100, servers)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// -db: in the foreground, logging to stderr.
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = &h.output, &h.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(progtest.Timeout):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("haproxy's configuration:\n%s\nits output:\n%s", cfg, h.output.String())
		}
	})
	poll.UntilNil(t, progtest.Timeout, "haproxy serves its statistics", func() error {
		select {
		case <-exited:
			t.Fatalf("haproxy exited: %v\n%s", cmd.ProcessState, h.output.String())
		default:
		}
		_, err := h.states()
		return err
	})
	return h
}

// URL returns the URL of path through HAProxy.
func (h *haproxy) URL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(h.port) + path
}

// states returns the check status of each server of the backend, by
// index (UP, DOWN, "UP 1/2", ...), from the statistics page's CSV.
func (h *haproxy) states() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(h.statsPort)+"/stats;csv", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, []byte("# ")))).ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("statistics %q: %v", body, err)
	}
	px, sv, st := slices.Index(rows[0], "pxname"), slices.Index(rows[0], "svname"), slices.Index(rows[0], "status")
	if px < 0 || sv < 0 || st < 0 {
		return nil, fmt.Errorf("statistics without pxname, svname, status: %q", rows[0])
	}
	var states []string
	for _, row := range rows[1:] {
		if len(row) > st && row[px] == "esbridge" && strings.HasPrefix(row[sv], "esbridge") {
			states = append(states, row[st])
		}
	}
	if len(states) == 0 {
		return nil, errors.New("no server in the statistics")
	}
	return states, nil
}

// waitState waits until HAProxy's check status of server i is want (UP,
// DOWN).
func (h *haproxy) waitState(i int, want string) {
	h.t.Helper()
	poll.UntilNil(h.t, progtest.Timeout, fmt.Sprintf("haproxy sees server %d %s", i, want), func() error {
		states, err := h.states()
		if err != nil {
			return err
		}
		if states[i] != want {
			return fmt.Errorf("it is %s", states[i])
		}
		return nil
	})
}
