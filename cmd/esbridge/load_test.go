package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/internal/poll"
)

// 1,000 clients of one JetStream route and 10,000 messages published as
// fast as JetStream takes them: every client gets every message once, in
// order. The bridge keeps its default backlog (4,096 events), so a client
// that falls behind is replayed from JetStream, and must still get every
// message exactly once. The bridge runs without the race detector, and the
// clients are lean, so that the test measures the bridge, not itself.
func TestManyClientsManyMessages(t *testing.T) {
	if testing.Short() {
		t.Log("-short: 100 clients, 2,000 messages")
	}
	clients, messages := 1000, 10000
	if testing.Short() {
		clients, messages = 100, 2000
	}
	ns := runNATS(t)
	pub, stream := ns.jetStream("LOAD")
	b := startBridgeBin(t, plainBinary(t), "-listen", "127.0.0.1:0", "-route", "/load="+stream)
	b.WaitReadyz(200)

	// Everyone resumes after the last sync marker, so that no client misses
	// a message by connecting late.
	probe := connect(t, b.URL("/load"), "")
	probe.syncLive(pub.publish)
	start := probe.lastEventID()
	probe.close()

	manyClients(t, clients, "every message once, in order",
		func(ctx context.Context, hc *http.Client, connected func()) error {
			return readLoad(ctx, hc, b.URL("/load"), start, messages, connected, nil)
		},
		func(ctx context.Context) error { return publishFast(ctx, pub.js, pub.subject, messages, "") })
}

// manyClients runs n lean clients at once, each reading with read until it
// has every message or fails. Once every client's response has begun, it
// calls publish; then it waits for the clients, and fails t for those
// whose read failed (ten at most are named): they did not get want.
func manyClients(t *testing.T, n int, want string, read func(ctx context.Context, hc *http.Client, connected func()) error, publish func(context.Context) error) {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	errs := make([]error, n)
	var connected, done sync.WaitGroup
	for i := range n {
		connected.Add(1)
		done.Go(func() { errs[i] = read(ctx, hc, connected.Done) })
	}
	connected.Wait()
	began := time.Now()
	if err := publish(ctx); err != nil {
		cancel()
		done.Wait()
		t.Fatal(err)
	}
	published := time.Since(began)
	done.Wait()
	t.Logf("%d clients: published in %v, all delivered in %v", n, published, time.Since(began))

	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed++; failed <= 10 {
				t.Errorf("client %d: %v", i, err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d clients did not get %s", failed, n, want)
	}
}

// readLoad reads the stream at url from after lastID until it has the data
// m1 .. mN in order (each perhaps followed by a space and padding), and
// reports the first departure from that. It calls connected once the
// response has begun, and waits for start, if not nil, before it reads.
func readLoad(ctx context.Context, hc *http.Client, url, lastID string, n int, connected func(), start <-chan struct{}) error {
	once := sync.OnceFunc(connected)
	defer once()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Last-Event-ID", lastID)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	once()
	if start != nil {
		select {
		case <-start:
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	buf := make([]byte, 32<<10)
	var carry []byte
	next := 1
	for next <= n {
		k, err := resp.Body.Read(buf)
		data := buf[:k]
		if len(carry) > 0 {
			carry = append(carry, data...)
			data = carry
		}
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			line := data[:i]
			data = data[i+1:]
			switch {
			case bytes.HasPrefix(line, []byte("data: m")):
				digits := line[len("data: m"):]
				if j := bytes.IndexByte(digits, ' '); j >= 0 {
					digits = digits[:j] // the padding
				}
				v, convErr := strconv.Atoi(string(digits))
				if convErr != nil || v != next {
					return fmt.Errorf("got %q, want m%d", line, next)
				}
				next++
			case bytes.HasPrefix(line, []byte("data")), bytes.HasPrefix(line, []byte("event")):
				return fmt.Errorf("got %q, want m%d", line, next)
			}
		}
		carry = append(carry[:0], data...)
		if err != nil {
			if next > n {
				break
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("after m%d: %w", next-1, err)
		}
	}
	return nil
}

// publishFast publishes m1 .. mN, each followed by pad, to subject in order, asynchronously, a
// window at a time, and checks every acknowledgement.
func publishFast(ctx context.Context, js jetstream.JetStream, subject string, n int, pad string) error {
	const window = 500
	for i := 1; i <= n; {
		var acks []jetstream.PubAckFuture
		for ; i <= n && len(acks) < window; i++ {
			f, err := js.PublishAsync(subject, []byte("m"+strconv.Itoa(i)+pad))
			if err != nil {
				return err
			}
			acks = append(acks, f)
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return errors.New("publishing did not complete")
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("publish %s: %w", f.Msg().Data, err)
			}
		}
	}
	return nil
}

// Clients that stop reading while far more is published than the bridge
// keeps in memory (and than their sockets hold) fall behind its log; when
// they read again they are replayed from JetStream and joined back to the
// live stream: they still get every message exactly once, in order, as
// does a client that kept up.
func TestSlowClientsCatchUp(t *testing.T) {
	const messages, stalled = 10000, 5
	pad := " " + strings.Repeat("p", 1000) // 10 MB in all
	ns := runNATS(t)
	pub, stream := ns.jetStream("SLOW")
	b := startBridgeBin(t, plainBinary(t), "-listen", "127.0.0.1:0", "-route", "/slow="+stream, "-backlog", "2000")
	b.WaitReadyz(200)
	probe := connect(t, b.URL("/slow"), "")
	probe.syncLive(pub.publish)
	start := probe.lastEventID()
	probe.close()

	// Small receive buffers, so that a client that does not read holds
	// little in its socket.
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
		return errors.Join(err, serr)
	}}
	tr := &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: stalled + 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Count the JetStream consumers made from now on: replays.
	var replays atomic.Int64
	sub, err := ns.conn().Subscribe("$JS.EVENT.ADVISORY.CONSUMER.CREATED.SLOW.>", func(*nats.Msg) { replays.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	resume := make(chan struct{})
	errs := make([]error, stalled+1)
	var connected, done sync.WaitGroup
	for i := range stalled + 1 {
		wait := resume
		if i == stalled {
			wait = nil // this one keeps up
		}
		connected.Add(1)
		done.Go(func() {
			errs[i] = readLoad(ctx, hc, b.URL("/slow"), start, messages, connected.Done, wait)
		})
	}
	connected.Wait()
	err = publishFast(ctx, pub.js, pub.subject, messages, pad)
	close(resume)
	if err != nil {
		cancel()
		done.Wait()
		t.Fatal(err)
	}
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d (stalled: %v): %v", i, i < stalled, err)
		}
	}
	// The stalled clients were replayed from JetStream (else this test
	// does not test what it says), by catch-up readers that they share.
	poll.Wait(waitFor, func() bool { return replays.Load() > 0 }) // advisories are asynchronous
	t.Logf("%d JetStream consumers made for %d stalled clients", replays.Load(), stalled)
	if replays.Load() == 0 {
		t.Errorf("no JetStream consumer made for %d stalled clients: they did not fall behind", stalled)
	}
}
