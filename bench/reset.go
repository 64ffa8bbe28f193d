package main

// Scenario X: HTTP/2 rapid reset against the esbridge program. Attackers
// open HTTP/2 streams over TLS and reset each at once (RST_STREAM right
// after HEADERS), as fast as they can, first on /healthz (the floor: a
// request that costs next to nothing), then on a stream route (/demo, a
// public route of -demo, which needs no broker). The program's resident
// memory is sampled throughout, and a normal client's /healthz round
// trips (on a connection of its own) give its latency before and during
// each attack.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/esbridge/esbridge/internal/h2reset"
)

// resetOptions are scenario X's flags.
type resetOptions struct {
	bin         string        // the esbridge binary; built from ../cmd/esbridge when empty
	attackers   int           // connections resetting streams
	duration    time.Duration // of each phase
	memoryLimit string        // -memory-limit of the program, if set
}

func resetFlags(r *resetOptions) {
	flag.StringVar(&r.bin, "reset-bin", "", "scenario X: the esbridge binary to attack (default: built from ../cmd/esbridge)")
	flag.IntVar(&r.attackers, "reset-attackers", 4, "scenario X: connections resetting streams as fast as they can")
	flag.DurationVar(&r.duration, "reset-duration", 10*time.Second, "scenario X: length of each phase (quiet, then an attack on /healthz, then one on /demo)")
	flag.StringVar(&r.memoryLimit, "reset-memory-limit", "", "scenario X: -memory-limit of the program (default: its own default)")
}

// A resetPhase is one phase of scenario X.
type resetPhase struct {
	Target   string        `json:"target"` // "" for the quiet phase
	Streams  int64         `json:"streams"`
	Conns    int64         `json:"connections"`
	PeakRSS  int64         `json:"peakRSSBytes"` // over the phase
	EndRSS   int64         `json:"endRSSBytes"`
	P50, P99 time.Duration // the normal client's /healthz round trips
	Trips    int           `json:"trips"`
	Failed   int           `json:"failed"` // round trips that failed
}

// resetResults are scenario X's.
type resetResults struct {
	Bin    string       `json:"bin"`
	Error  string       `json:"error,omitempty"`
	Phases []resetPhase `json:"phases"`
}

func (o options) resetScenario() *resetResults {
	res := &resetResults{}
	if err := o.runReset(res); err != nil {
		res.Error = err.Error()
	}
	return res
}

func (o options) runReset(res *resetResults) error {
	dir, err := os.MkdirTemp("", "esbridge-reset-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := buildESBridge(dir, o.reset.bin)
	if err != nil {
		return err
	}
	res.Bin = bin
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := writeSelfSigned(cert, key); err != nil {
		return err
	}
	args := []string{"-demo", "-listen", "127.0.0.1:0", "-tls-cert", cert, "-tls-key", key}
	if o.reset.memoryLimit != "" {
		args = append(args, "-memory-limit", o.reset.memoryLimit)
	}
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	addr, err := listeningAddr(stderr)
	if err != nil {
		return err
	}
	go io.Copy(io.Discard, stderr)

	for _, target := range []string{"", "/healthz", "/demo"} {
		p, err := o.resetPhase(cmd.Process.Pid, addr, target)
		if err != nil {
			return fmt.Errorf("attack on %q: %w", target, err)
		}
		res.Phases = append(res.Phases, p)
	}
	return nil
}

// listeningAddr reads the program's log until it tells its address.
func listeningAddr(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "esbridge listening") {
			continue
		}
		for f := range strings.FieldsSeq(line) {
			if a, ok := strings.CutPrefix(f, "addr="); ok {
				return a, nil
			}
		}
	}
	return "", errors.New("the program ended before it listened")
}

// resetPhase runs one phase: the attack on target ("" for none) with the
// normal client beside it, sampling the program's memory.
func (o options) resetPhase(pid int, addr, target string) (resetPhase, error) {
	p := resetPhase{Target: target}
	ctx, cancel := context.WithTimeout(context.Background(), o.reset.duration)
	defer cancel()
	var wg sync.WaitGroup
	var counts h2reset.Counts
	if target != "" {
		for range o.reset.attackers {
			wg.Go(func() { h2reset.Attack(ctx, addr, target, &counts) })
		}
	}
	var rss []int64
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if m := procStatus(pid, "VmRSS"); m > 0 {
					rss = append(rss, int64(m))
				}
			}
		}
	})
	trips, failed := normalClient(ctx, addr)
	wg.Wait()
	p.Streams, p.Conns = counts.Streams.Load(), counts.Conns.Load()
	if len(rss) > 0 {
		p.PeakRSS, p.EndRSS = slices.Max(rss), rss[len(rss)-1]
	}
	p.Trips, p.Failed = len(trips), failed
	if len(trips) > 0 {
		slices.Sort(trips)
		p.P50, p.P99 = trips[len(trips)/2], trips[len(trips)*99/100]
	}
	return p, nil
}

// normalClient makes /healthz round trips over HTTP/2, one every 10 ms,
// until ctx ends, and returns their times and how many failed.
func normalClient(ctx context.Context, addr string) (trips []time.Duration, failed int) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return trips, failed
		case <-t.C:
		}
		start := time.Now()
		resp, err := hc.Get("https://" + addr + "/healthz")
		if err != nil {
			failed++
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed++
			continue
		}
		trips = append(trips, time.Since(start))
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key (see selfSignedPEM).
func writeSelfSigned(certFile, keyFile string) error {
	certPEM, keyPEM, err := selfSignedPEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, keyPEM, 0o600)
}

// printReset prints scenario X's table.
func printReset(out io.Writer, o options, r *resetResults) {
	fmt.Fprintf(out, "\nX. HTTP/2 rapid reset: %d connections open streams over TLS and reset each at once, %v a phase; the esbridge program (-demo) at %s\n",
		o.reset.attackers, o.reset.duration, r.Bin)
	if r.Error != "" {
		fmt.Fprintf(out, "  error: %s\n", r.Error)
	}
	fmt.Fprintf(out, "  %-10s %12s %8s %10s %10s %12s %12s %8s\n", "attack on", "streams", "conns", "peak RSS", "end RSS", "client p50", "client p99", "failed")
	for _, p := range r.Phases {
		target := p.Target
		if target == "" {
			target = "(none)"
		}
		fmt.Fprintf(out, "  %-10s %12d %8d %8d MB %8d MB %12v %12v %8d\n", target, p.Streams, p.Conns, p.PeakRSS>>20, p.EndRSS>>20,
			p.P50.Round(10*time.Microsecond), p.P99.Round(10*time.Microsecond), p.Failed)
	}
}
