package e2e

// HAProxy, Debian's package, in front of esbridge instances: the load
// balancer of docs/operations.md ("Behind a load balancer"), run by the
// test with a generated configuration.

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/progtest"
)

// haproxyConfig is HAProxy's configuration for SSE, as docs/operations.md
// shows it, with the health checks made fast for the test (inter 200ms
// where the docs have 2s). Keep the two alike.
var haproxyConfig = template.Must(template.New("haproxy.cfg").Parse(`global
    maxconn {{.MaxConn}}

defaults
    mode http
    maxconn {{.MaxConn}}
    timeout connect 2s
    timeout http-request 10s
    # Longer than esbridge's heartbeat (-heartbeat, 15s), which is all an
    # idle stream carries.
    timeout client 1m
    timeout server 1m
    timeout tunnel 1h
    # A GET may be retried elsewhere: on a refused connection (an instance
    # that has just exited) and on a reused connection it closed.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend sse
    bind 127.0.0.1:{{.Port}}
    # With no instance up, a stream gets an empty one that tells the
    # browser to come back in 5s, rather than a 503, after which a
    # browser would not try again.
    http-request return status 200 content-type text/event-stream string "retry: 5000\n\n" if { nbsrv(esbridge) eq 0 } { req.hdr(accept) -m sub text/event-stream }
    default_backend esbridge

backend esbridge
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 200ms fall 2 rise 2
{{- range $i, $addr := .Servers}}
    server esbridge{{$i}} {{$addr}}
{{- end}}

frontend stats
    bind 127.0.0.1:{{.StatsPort}}
    stats enable
    stats uri /stats
`))

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
	var cfg bytes.Buffer
	err := haproxyConfig.Execute(&cfg, map[string]any{
		// Each client has a connection to HAProxy and one from it.
		"MaxConn": 2*clients + 100, "Port": h.port, "StatsPort": h.statsPort, "Servers": servers,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, cfg.Bytes(), 0o600); err != nil {
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
			t.Logf("haproxy's configuration:\n%s\nits output:\n%s", cfg.String(), h.output.String())
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
