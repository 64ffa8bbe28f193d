package main

// Scenario T, "soak": the esbridge program, built from ../cmd/esbridge,
// runs for -soak-duration (30 minutes) with a route on each broker:
//
//	/js     JetStream, a stream of subjects soak.js.l0 and soak.js.l1
//	        (type=subject), on a nats-server embedded in the orchestrator
//	/nats   core NATS, soak.core.> on the same server
//	/kafka  a topic of -soak-kafka-partitions partitions, key kJ on
//	        partition J (-kafka-brokers; scripts/kafka.sh start)
//	/rmq    a RabbitMQ stream queue (-amqp-url; scripts/rabbitmq.sh start)
//
// -soak-rate messages/s are published to each, message g of a route
// ("ROUTE G x…") to lane (g-1) mod lanes: a subject, a key. About
// -soak-clients clients are connected at once: a quarter stay for the
// whole run, the others each for about -soak-life and are replaced as
// they leave. They take these kinds in turn:
//
//	plain   a route
//	slow    a route, read at a quarter of the rate (a 4 KB receive buffer)
//	resume  a route, dropping its connection every 5 to 15 s and resuming
//	        with Last-Event-ID
//	filter  ?type= on /js, ?subject= on /nats, ?key= on /kafka
//	since   ?since= 30 s back on /js, /kafka or /rmq
//	merged  /_streams of every route, /kafka with a key filter
//
// and all of them resume with Last-Event-ID whenever a stream ends. Partway
// through, the embedded nats-server is restarted on its port (at 25%,
// -soak-nats-down down), the esbridge program is stopped with SIGTERM and
// started again on its port (at 45%), and with -soak-kafka-restart Kafka
// is restarted with scripts/kafka.sh restart (at 65%; this disturbs
// anything else using the broker).
//
// Every -soak-sample the program's resident memory (VmRSS), heap in use
// and goroutines (go_memstats_heap_inuse_bytes and go_goroutines of its
// admin port's /metrics), open files (/proc/PID/fd)
// and established TCP connections to each broker's port are sampled
// (-soak-csv writes them all); each one's least-squares slope over the
// samples of each esbridge process after -soak-warmup is reported, as %
// of its mean per 10 minutes: flat under 1%.
//
// Every client checks its stream exactly (soakclient.go): in each lane of
// its view of a route, every message follows the one before it; the first
// one is not later than the first published after its stream opened
// without an ID (with since, it is the first published at the time);
// gaps only on core NATS, with a reason that a source without history
// gives, counted with the messages they skip; at the end the publishers
// stop and every client still connected must receive every message up to
// the last the brokers confirmed. What a client lacks is then compared
// with what the broker holds, read from the start by a plain consumer:
// messages the broker lost too (RabbitMQ loses confirmed messages when
// its application restarts) are counted, not failures. The command exits
// with status 1 if any check failed.

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// soakOptions are scenario T's flags.
type soakOptions struct {
	duration     time.Duration
	warmup       time.Duration
	sample       time.Duration
	clients      int
	rate         int
	size         int
	life         time.Duration
	backlog      int
	partitions   int
	natsDown     time.Duration
	kafkaRestart bool
	drain        time.Duration
	csv          string
	logs         string
	bin          string
}

func soakFlags(s *soakOptions) {
	flag.DurationVar(&s.duration, "soak-duration", 30*time.Minute, "scenario T: length of the soak")
	flag.DurationVar(&s.warmup, "soak-warmup", 0, "scenario T: samples of each esbridge process left out of the slopes (default: a sixth of -soak-duration, 30 s to 5 min)")
	flag.DurationVar(&s.sample, "soak-sample", 10*time.Second, "scenario T: sampling interval")
	flag.IntVar(&s.clients, "soak-clients", 40, "scenario T: clients connected at once")
	flag.IntVar(&s.rate, "soak-rate", 50, "scenario T: messages/s published to each route")
	flag.IntVar(&s.size, "soak-size", 100, "scenario T: message size in bytes")
	flag.DurationVar(&s.life, "soak-life", 2*time.Minute, "scenario T: mean time a client stays (uniform from half to 1.5 times it), but a quarter of them stay throughout")
	flag.IntVar(&s.backlog, "soak-backlog", 1024, "scenario T: the program's -backlog (small, so that slow clients are caught up from the brokers)")
	flag.IntVar(&s.partitions, "soak-kafka-partitions", 3, "scenario T: partitions (and keys) of the Kafka topic")
	flag.DurationVar(&s.natsDown, "soak-nats-down", 3*time.Second, "scenario T: how long the embedded nats-server is down at its restart")
	flag.BoolVar(&s.kafkaRestart, "soak-kafka-restart", false, "scenario T: restart Kafka too (../scripts/kafka.sh restart), at 65% of the run; disturbs anything else using the broker")
	flag.DurationVar(&s.drain, "soak-drain", 10*time.Minute, "scenario T: the longest the clients may take to receive the last messages once publishing stops (they fail sooner if they make no progress for 30 s)")
	flag.StringVar(&s.csv, "soak-csv", "", "scenario T: write the samples to this CSV `file`")
	flag.StringVar(&s.logs, "soak-logs", "", "scenario T: keep the esbridge logs (esbridge-1.log, esbridge-2.log) and binary in this `dir`")
	flag.StringVar(&s.bin, "soak-bin", "", "scenario T: the esbridge binary (default: built from ../cmd/esbridge)")
}

// A soakSample is one sample of the esbridge process.
type soakSample struct {
	At         time.Duration `json:"at"` // since the start
	Proc       int           `json:"proc"`
	PID        int           `json:"pid"`
	RSS        uint64        `json:"rssBytes"`
	Heap       uint64        `json:"heapInuseBytes"`
	Goroutines int           `json:"goroutines"`
	FDs        int           `json:"openFiles"`
	NATS       int           `json:"natsConns"`
	Kafka      int           `json:"kafkaConns"`
	AMQP       int           `json:"amqpConns"`
	Clients    int           `json:"clients"`
	OK         bool          `json:"ok"` // every figure read
}

// soakMetric is one metric's fit over a process's warm samples.
type soakMetric struct {
	Name     string  `json:"name"`
	First    float64 `json:"first"`
	Last     float64 `json:"last"`
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
	Mean     float64 `json:"mean"`
	SlopePct float64 `json:"slopePctPer10min"`
	Flat     bool    `json:"flat"`
}

// soakFit is the fit of one esbridge process's samples.
type soakFit struct {
	Proc     int           `json:"proc"`
	From, To time.Duration // of the samples fitted, since the start
	Samples  int           `json:"samples"`
	Metrics  []soakMetric  `json:"metrics"`
}

// soakResults are scenario T's.
type soakResults struct {
	Bin       string                `json:"bin"`
	Error     string                `json:"error,omitempty"`
	Elapsed   time.Duration         `json:"elapsed"`
	Timeline  []string              `json:"timeline"`
	Published map[string]uint64     `json:"published"`
	PubErrors int64                 `json:"publishErrors"`
	Samples   []soakSample          `json:"samples"`
	Fits      []soakFit             `json:"fits"`
	Kinds     map[string]soakCounts `json:"kinds"`
	Total     soakCounts            `json:"total"`
	Failures  []string              `json:"failures"` // the first 30
	NFailures int                   `json:"failureCount"`
	Behind    uint64                `json:"behindAtEnd"` // messages the clients lacked when the drain ended
	NotReady  time.Duration         `json:"notReady"`    // how long /readyz said not ready, about
	Warnings  []string              `json:"warnings"`    // of the esbridge logs
}

// failed tells whether any check failed.
func (r *soakResults) failed() bool { return r.Error != "" || r.NFailures > 0 }

func (o options) soakScenario() *soakResults {
	res := &soakResults{Published: map[string]uint64{}, Kinds: map[string]soakCounts{}}
	if err := o.runSoak(res); err != nil {
		res.Error = err.Error()
	}
	return res
}

// buildESBridge builds ../cmd/esbridge into dir, unless bin names a
// binary already.
func buildESBridge(dir, bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	bin = filepath.Join(dir, "esbridge")
	build := exec.Command("go", "build", "-o", bin, "./cmd/esbridge")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building esbridge: %v: %s", err, out)
	}
	return bin, nil
}

// freePort returns a port of 127.0.0.1 free at the time.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// soakProgram is the esbridge program of the soak, restartable on its
// ports.
type soakProgram struct {
	bin, dir    string
	args        []string
	addr, admin string

	mu   sync.Mutex
	cmd  *exec.Cmd
	proc int // 1 for the first process
}

func (p *soakProgram) start() error {
	p.mu.Lock()
	n := p.proc + 1
	p.mu.Unlock()
	lf, err := os.Create(filepath.Join(p.dir, fmt.Sprintf("esbridge-%d.log", n)))
	if err != nil {
		return err
	}
	defer lf.Close() // the child has its own descriptor
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stderr = lf
	if err := cmd.Start(); err != nil {
		return err
	}
	p.mu.Lock()
	p.cmd, p.proc = cmd, n
	p.mu.Unlock()
	// Ready: the admin port's /readyz answers 200 (every source connected).
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := hc.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("esbridge not ready in a minute (log: %s)", logTail(lf.Name()))
}

// stop sends SIGTERM and waits for the process, killing it after a
// minute.
func (p *soakProgram) stop() (time.Duration, error) {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	began := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return time.Since(began), err
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		return time.Since(began), errors.New("esbridge did not exit within a minute of SIGTERM")
	}
}

func (p *soakProgram) current() (proc, pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc, p.cmd.Process.Pid
}

func (o options) runSoak(res *soakResults) error {
	so := o.soak
	warmup := so.warmup
	if warmup <= 0 {
		warmup = min(max(so.duration/6, 30*time.Second), 5*time.Minute)
	}
	dir := so.logs
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "esbridge-soak-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var err error
	if res.Bin, err = buildESBridge(dir, so.bin); err != nil {
		return err
	}

	// Brokers and routes.
	ns, err := startSoakNATS()
	if err != nil {
		return err
	}
	defer ns.close()
	var routes []*soakRoute
	defer func() {
		for _, r := range routes {
			if r.cleanup != nil {
				r.cleanup()
			}
		}
	}()
	k := kafkaBroker{o.kafka}
	k.partitions = so.partitions
	for _, mk := range []func() (*soakRoute, error){
		func() (*soakRoute, error) { return jsRoute(ns) },
		func() (*soakRoute, error) { return natsRoute(ns) },
		func() (*soakRoute, error) { return kafkaRoute(k) },
		func() (*soakRoute, error) { return amqpRoute(amqpBroker{o.amqp}) },
	} {
		r, err := mk()
		if err != nil {
			return err
		}
		r.uncertain = map[uint64]bool{}
		routes = append(routes, r)
	}

	// The program.
	addr, err := freePort()
	if err != nil {
		return err
	}
	admin, err := freePort()
	if err != nil {
		return err
	}
	prog := &soakProgram{bin: res.Bin, dir: dir, addr: addr, admin: admin,
		args: []string{"-listen", addr, "-admin-listen", admin, "-backlog", strconv.Itoa(so.backlog)}}
	for _, r := range routes {
		prog.args = append(prog.args, "-route", r.path()+"="+r.url)
	}
	start := time.Now()
	var tlMu sync.Mutex
	event := func(format string, args ...any) {
		line := fmt.Sprintf("%s %s", clock(time.Since(start)), fmt.Sprintf(format, args...))
		tlMu.Lock()
		res.Timeline = append(res.Timeline, line)
		tlMu.Unlock()
		o.logf("T %s", line)
	}
	if err := prog.start(); err != nil {
		return err
	}
	defer func() {
		if d, err := prog.stop(); err != nil {
			event("esbridge stopped in %v: %v", d.Round(time.Millisecond), err)
		}
		for i := 1; i <= prog.proc; i++ {
			if n, w := logWarnings(filepath.Join(dir, fmt.Sprintf("esbridge-%d.log", i))); n > 0 {
				res.Warnings = append(res.Warnings, fmt.Sprintf("process %d: %d warnings and errors: %s", i, n, w))
			}
		}
	}()
	event("esbridge ready at %s (admin %s)", addr, admin)

	// Publishers.
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	var pubErrs atomic.Int64
	var pubWG sync.WaitGroup
	for _, r := range routes {
		pubWG.Go(func() { r.run(pubCtx, so.rate, so.size, &pubErrs) })
	}

	// Sampler.
	var clientsNow atomic.Int64
	var smu sync.Mutex
	sampCtx, stopSamp := context.WithCancel(context.Background())
	var sampWG sync.WaitGroup
	natsPorts := portSet(ns.hostPort())
	kafkaPorts := portSet(k.brokerList()...)
	amqpPorts := portSet(amqpHostPort(o.amqp.url))
	sampWG.Go(func() {
		t := time.NewTicker(so.sample)
		defer t.Stop()
		for {
			select {
			case <-sampCtx.Done():
				return
			case <-t.C:
			}
			proc, pid := prog.current()
			s := soakSample{At: time.Since(start), Proc: proc, PID: pid, Clients: int(clientsNow.Load())}
			s.RSS = procStatus(pid, "VmRSS")
			var gerr error
			s.Goroutines, s.Heap, gerr = goroutines(admin)
			fds, ferr := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			s.FDs = len(fds)
			var e1, e2, e3 error
			s.NATS, e1 = tcpConns(pid, natsPorts)
			s.Kafka, e2 = tcpConns(pid, kafkaPorts)
			s.AMQP, e3 = tcpConns(pid, amqpPorts)
			s.OK = s.RSS > 0 && gerr == nil && ferr == nil && errors.Join(e1, e2, e3) == nil
			smu.Lock()
			res.Samples = append(res.Samples, s)
			smu.Unlock()
		}
	})

	// Readiness: /readyz of the admin port, twice a second.
	var ready atomic.Bool
	ready.Store(true)
	var notReady atomic.Int64 // samples
	sampWG.Go(func() {
		hc := &http.Client{Timeout: time.Second}
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampCtx.Done():
				return
			case <-t.C:
			}
			ok := false
			if resp, err := hc.Get("http://" + admin + "/readyz"); err == nil {
				resp.Body.Close()
				ok = resp.StatusCode == http.StatusOK
			}
			ready.Store(ok)
			if !ok {
				notReady.Add(1)
			}
		}
	})

	// Faults, on a timeline of their own.
	procStart := map[int]time.Duration{1: 0}
	var psMu sync.Mutex
	faultCtx, stopFaults := context.WithCancel(context.Background())
	defer stopFaults()
	var faultWG sync.WaitGroup
	at := func(frac float64) bool {
		select {
		case <-faultCtx.Done():
			return false
		case <-time.After(time.Until(start.Add(time.Duration(frac * float64(so.duration))))):
			return true
		}
	}
	faultWG.Go(func() {
		if !at(0.25) {
			return
		}
		event("nats-server stopped")
		if err := ns.restart(so.natsDown); err != nil {
			event("nats-server restart failed: %v", err)
			return
		}
		event("nats-server started again on %s", ns.hostPort())
		if !at(0.45) {
			return
		}
		event("esbridge: SIGTERM")
		ready.Store(false)
		d, err := prog.stop()
		event("esbridge exited in %v (%v)", d.Round(time.Millisecond), err)
		err = prog.start()
		if proc, _ := prog.current(); proc == 2 { // started, ready or not
			psMu.Lock()
			procStart[2] = time.Since(start)
			psMu.Unlock()
		}
		if err != nil {
			// A broker may be down (another user's restart): the run
			// goes on, and the clients' checks tell the rest.
			event("esbridge started again: %v", err)
		} else {
			event("esbridge started again, ready")
		}
		if !so.kafkaRestart || !at(0.65) {
			return
		}
		event("kafka: scripts/kafka.sh restart")
		out, err := exec.Command("../scripts/kafka.sh", "restart").CombinedOutput()
		if err != nil {
			event("kafka restart failed: %v: %s", err, strings.TrimSpace(string(out)))
			return
		}
		event("kafka restarted")
	})

	// Clients.
	var (
		final    atomic.Bool
		ranges   []soakRangeFail
		failMu   sync.Mutex
		cmu      sync.Mutex
		active   = map[*soakClient]context.Context{}
		clientWG sync.WaitGroup
	)
	fail := func(s string) {
		failMu.Lock()
		defer failMu.Unlock()
		res.NFailures++
		if len(res.Failures) < 30 {
			res.Failures = append(res.Failures, clock(time.Since(start))+" "+s)
		}
	}
	failRange := func(f soakRangeFail) {
		f.desc = clock(time.Since(start)) + " " + f.desc
		failMu.Lock()
		defer failMu.Unlock()
		ranges = append(ranges, f)
	}
	collect := func(c *soakClient, n soakCounts) {
		n.Clients = 1
		cmu.Lock()
		defer cmu.Unlock()
		delete(active, c)
		kc := res.Kinds[c.kind]
		kc.add(n)
		res.Kinds[c.kind] = kc
		clientsNow.Store(int64(len(active)))
	}
	permanent := max(so.clients/4, 1)
	clientCtx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	end := start.Add(so.duration)
	joined := 0
	for time.Now().Before(end) {
		cmu.Lock()
		n := len(active)
		cmu.Unlock()
		if n < so.clients {
			c := newSoakClient(joined, routes, addr, so.rate, &final, &ready, fail, failRange)
			ctx, cancel := context.WithCancel(clientCtx)
			if joined >= permanent {
				// The client leaves after its life, unless the run is
				// ending: then it stays for the check of its tail.
				life := so.life/2 + rand.N(max(so.life, 1))
				time.AfterFunc(life, func() {
					if !final.Load() {
						cancel()
					}
				})
			}
			joined++
			cmu.Lock()
			active[c] = ctx
			clientsNow.Store(int64(len(active)))
			cmu.Unlock()
			clientWG.Go(func() {
				defer cancel()
				collect(c, c.run(ctx))
			})
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The end: publishing stops, the clients still connected must receive
	// every message up to the last one each broker holds.
	stopFaults()
	faultWG.Wait()
	stopPub()
	pubWG.Wait()
	acked := map[string]uint64{}
	for _, r := range routes {
		r.pub.close() // core NATS: flushed
		acked[r.name] = r.acked.Load()
		res.Published[r.path()] = acked[r.name]
	}
	res.PubErrors = pubErrs.Load()
	final.Store(true)
	event("publishing stopped: %d clients connected, %d joined in all", clientsNow.Load(), joined)
	cmu.Lock()
	survivors := make([]*soakClient, 0, len(active))
	for c, ctx := range active {
		if ctx.Err() == nil {
			survivors = append(survivors, c)
		}
	}
	cmu.Unlock()
	// Wait while they make progress: a slow client far behind takes a
	// while.
	drained, progress := time.Now().Add(so.drain), time.Now()
	for prev := uint64(math.MaxUint64); ; {
		res.Behind = 0
		for _, c := range survivors {
			res.Behind += c.behind(acked)
		}
		if res.Behind < prev {
			prev, progress = res.Behind, time.Now()
		}
		if res.Behind == 0 || time.Now().After(drained) || time.Since(progress) > 30*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	event("%d messages lacking in the clients still connected", res.Behind)
	for _, c := range survivors {
		c.tail(acked)
	}
	stopSamp()
	sampWG.Wait()
	stopClients()
	clientWG.Wait()
	res.Elapsed = time.Since(start)
	res.NotReady = time.Duration(notReady.Load()) * 500 * time.Millisecond

	// What the clients lacked is a failure unless the broker lacks it
	// too.
	for _, r := range routes {
		have, twice, err := r.held(acked[r.name])
		if err != nil {
			// Without the broker's account, what the clients lack is a
			// failure.
			event("%s: reading the broker's stream: %v", r.path(), err)
			have = make([]bool, acked[r.name]+1)
			for g := range have {
				have[g] = true
			}
			twice = 0
		}
		if have == nil { // core NATS: no history to read
			continue
		}
		var lacks []uint64
		for g := uint64(1); g <= acked[r.name]; g++ {
			if !have[g] {
				lacks = append(lacks, g)
			}
		}
		if len(lacks) > 0 || twice > 0 {
			event("%s: the broker lacks %d of the %d messages it confirmed (%s), and holds %d twice", r.path(), len(lacks), acked[r.name], spans(lacks), twice)
		}
		for _, f := range ranges {
			if f.r != r {
				continue
			}
			var lost, kept uint64
			for g := f.from; g <= f.to && g >= f.from; g += f.step {
				if have[g] {
					kept++
				} else {
					lost++
				}
			}
			kc := res.Kinds[f.kind]
			kc.BrokerLost += lost
			if kept > 0 {
				if f.what == "start" {
					kc.Start++
				} else {
					kc.Skipped += kept
				}
				fail(f.desc)
			}
			res.Kinds[f.kind] = kc
		}
	}
	for _, f := range ranges {
		if f.r.read == nil { // no broker to ask: a failure
			kc := res.Kinds[f.kind]
			if f.what == "start" {
				kc.Start++
			} else {
				kc.Skipped += (f.to-f.from)/f.step + 1
			}
			res.Kinds[f.kind] = kc
			fail(f.desc)
		}
	}
	for _, n := range res.Kinds {
		res.Total.add(n)
	}

	// Fits: each process's samples after its warm-up, until publishing
	// stopped.
	psMu.Lock()
	defer psMu.Unlock()
	for _, proc := range slices.Sorted(func(yield func(int) bool) {
		for p := range procStart {
			if !yield(p) {
				return
			}
		}
	}) {
		var ss []soakSample
		for _, s := range res.Samples {
			if s.OK && s.Proc == proc && s.At >= procStart[proc]+warmup && s.At <= so.duration {
				ss = append(ss, s)
			}
		}
		if len(ss) >= 3 {
			res.Fits = append(res.Fits, fitSoak(proc, ss))
		}
	}
	if so.csv != "" {
		if err := writeSoakCSV(so.csv, res.Samples); err != nil {
			return err
		}
	}
	return nil
}

// spans writes sorted numbers as ranges: "3-7, 9".
func spans(gs []uint64) string {
	var b strings.Builder
	for i := 0; i < len(gs); {
		j := i
		for j+1 < len(gs) && gs[j+1] == gs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if b.Len() > 200 {
			b.WriteString("…")
			break
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", gs[i], gs[j])
		} else {
			fmt.Fprintf(&b, "%d", gs[i])
		}
		i = j + 1
	}
	return b.String()
}

// clock formats d as minutes:seconds.
func clock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// portSet returns the ports of host:port addresses, as tcpConns wants them.
func portSet(addrs ...string) map[string]bool {
	ports := map[string]bool{}
	for _, a := range addrs {
		if _, p, err := splitPort(a); err == nil {
			ports[p] = true
		}
	}
	return ports
}

// amqpHostPort is the broker address of an AMQP URL.
func amqpHostPort(u string) string {
	rest, _ := strings.CutPrefix(u, "amqp://")
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	host, _, _ := strings.Cut(rest, "/")
	if !strings.Contains(host, ":") {
		host += ":5672"
	}
	return host
}

// goroutines reads go_goroutines and go_memstats_heap_inuse_bytes from
// the admin port's /metrics.
func goroutines(admin string) (n int, heap uint64, err error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := 0
	for sc.Scan() && found < 2 {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			n, found = int(f), found+1
		}
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			heap, found = uint64(f), found+1
		}
	}
	if found < 2 {
		return n, heap, errors.New("no go_goroutines or go_memstats_heap_inuse_bytes in /metrics")
	}
	return n, heap, nil
}

// fitSoak fits each metric of a process's samples.
func fitSoak(proc int, ss []soakSample) soakFit {
	f := soakFit{Proc: proc, From: ss[0].At, To: ss[len(ss)-1].At, Samples: len(ss)}
	metric := func(name string, v func(soakSample) float64) {
		m := soakMetric{Name: name, First: v(ss[0]), Last: v(ss[len(ss)-1]), Min: math.Inf(1), Max: math.Inf(-1)}
		var sx, sy, sxx, sxy float64
		n := float64(len(ss))
		for _, s := range ss {
			x, y := s.At.Minutes()/10, v(s)
			sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
			m.Min, m.Max = min(m.Min, y), max(m.Max, y)
		}
		m.Mean = sy / n
		if d := n*sxx - sx*sx; d > 0 && m.Mean != 0 {
			m.SlopePct = 100 * (n*sxy - sx*sy) / d / m.Mean
		}
		m.Flat = math.Abs(m.SlopePct) < 1
		f.Metrics = append(f.Metrics, m)
	}
	metric("RSS MB", func(s soakSample) float64 { return float64(s.RSS) / (1 << 20) })
	metric("heap MB", func(s soakSample) float64 { return float64(s.Heap) / (1 << 20) })
	metric("goroutines", func(s soakSample) float64 { return float64(s.Goroutines) })
	metric("open files", func(s soakSample) float64 { return float64(s.FDs) })
	metric("NATS conns", func(s soakSample) float64 { return float64(s.NATS) })
	metric("Kafka conns", func(s soakSample) float64 { return float64(s.Kafka) })
	metric("RabbitMQ conns", func(s soakSample) float64 { return float64(s.AMQP) })
	metric("clients", func(s soakSample) float64 { return float64(s.Clients) })
	return f
}

func writeSoakCSV(path string, ss []soakSample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"seconds", "process", "pid", "rss_bytes", "heap_inuse_bytes", "goroutines", "open_files", "nats_conns", "kafka_conns", "amqp_conns", "clients", "ok"})
	for _, s := range ss {
		_ = w.Write([]string{strconv.FormatFloat(s.At.Seconds(), 'f', 1, 64), strconv.Itoa(s.Proc), strconv.Itoa(s.PID),
			strconv.FormatUint(s.RSS, 10), strconv.FormatUint(s.Heap, 10), strconv.Itoa(s.Goroutines), strconv.Itoa(s.FDs),
			strconv.Itoa(s.NATS), strconv.Itoa(s.Kafka), strconv.Itoa(s.AMQP), strconv.Itoa(s.Clients), strconv.FormatBool(s.OK)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printSoak prints scenario T's tables.
func printSoak(out io.Writer, o options, r *soakResults) {
	so := o.soak
	fmt.Fprintf(out, "\nT. Soak for %v: the esbridge program (%s, -backlog %d), routes /js (JetStream), /nats (core NATS), /kafka (%d partitions), /rmq (RabbitMQ stream), %d %d-byte messages/s each; %d clients at once (a quarter throughout, the others about %v each), kinds %s in turn\n",
		so.duration, r.Bin, so.backlog, so.partitions, so.rate, so.size, so.clients, so.life, strings.Join(soakKinds, ", "))
	if r.Error != "" {
		fmt.Fprintf(out, "  error: %s\n", r.Error)
	}
	for _, l := range r.Timeline {
		fmt.Fprintf(out, "  %s\n", l)
	}
	var pub []string
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range r.Published {
			if !yield(p) {
				return
			}
		}
	}) {
		pub = append(pub, fmt.Sprintf("%s %d", p, r.Published[p]))
	}
	fmt.Fprintf(out, "  published: %s; publish errors retried: %d\n", strings.Join(pub, ", "), r.PubErrors)
	fmt.Fprintf(out, "\n  samples every %v; slopes are least-squares fits over each esbridge process's samples after its warm-up, %% of the mean per 10 minutes (flat: under 1%%)\n", so.sample)
	fmt.Fprintf(out, "  %-4s %-15s %7s %13s %9s %9s %9s %9s %14s %5s\n", "proc", "metric", "samples", "window", "first", "last", "min", "max", "slope %/10min", "flat")
	for _, f := range r.Fits {
		for _, m := range f.Metrics {
			flat := "yes"
			if !m.Flat {
				flat = "NO"
			}
			fmt.Fprintf(out, "  %-4d %-15s %7d %13s %9.1f %9.1f %9.1f %9.1f %+14.2f %5s\n", f.Proc, m.Name, f.Samples,
				clock(f.From)+"-"+clock(f.To), m.First, m.Last, m.Min, m.Max, m.SlopePct, flat)
		}
	}
	fmt.Fprintf(out, "\n  esbridge not ready (/readyz, polled twice a second) for about %v in all\n", r.NotReady.Round(time.Second))
	fmt.Fprintf(out, "\n  %-7s %7s %6s %6s %6s %7s %9s %5s %6s %6s %6s %7s %6s | %5s %7s %6s %5s %5s %7s %6s %9s\n",
		"kind", "clients", "conns", "drops", "ended", "refused", "events", "gaps", "lost", "outage", "broker", "early", "gapend",
		"dup", "skipped", "filter", "start", "tail", "bad gap", "status", "malformed")
	row := func(name string, c soakCounts) {
		fmt.Fprintf(out, "  %-7s %7d %6d %6d %6d %7d %9d %5d %6d %6d %6d %7d %6d | %5d %7d %6d %5d %5d %7d %6d %9d\n",
			name, c.Clients, c.Conns, c.Drops, c.Ended, c.Refused, c.Events, c.Gaps, c.Lost, c.Outage, c.BrokerLost, c.NotReady, c.GapAtEnd,
			c.Dup, c.Skipped, c.Mismatch, c.Start, c.Tail, c.BadGap, c.Status, c.Malformed)
	}
	for _, k := range soakKinds {
		row(k, r.Kinds[k])
	}
	row("total", r.Total)
	fmt.Fprintf(out, "  left of |, not failures: gaps on core NATS (unknown-id, slow, source-reconnected, messages-lost) and the messages they skipped (lost);\n")
	fmt.Fprintf(out, "  outage: gaps since-failed or history (a broker that could not answer); broker: messages lacking that the broker lacks too;\n")
	fmt.Fprintf(out, "  early: lanes that began late on a stream opened while esbridge was not ready; gapend: lanes whose last event was a gap.\n")
	fmt.Fprintf(out, "  right of |: failures. Broker duplicates of a retried publication: %d\n", r.Total.BrokerDu)
	if r.NFailures == 0 && r.Error == "" {
		fmt.Fprintf(out, "  every check passed: no message lost, none twice, gaps only on core NATS\n")
	} else {
		fmt.Fprintf(out, "  FAILED: %d checks\n", r.NFailures)
		for _, f := range r.Failures {
			fmt.Fprintf(out, "    %s\n", f)
		}
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(out, "  log: %s\n", w)
	}
}
