//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/poll"
)

// TestPoller: lib "poller" sends every event, in order, to a client that
// reads, while a client that never reads is given its own goroutine and
// dropped at the write timeout; a client that closes is dropped too.
func TestPoller(t *testing.T) {
	p, err := newPollerServer(64, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	hs := httptest.NewServer(p)
	defer hs.Close()
	conns := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.conns)
	}

	resp, err := http.Get(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, ct)
	}
	// A client that sends its request and never reads, with a small
	// receive buffer.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	stalled, err := d.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := fmt.Fprintf(stalled, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "both clients taken over", func() bool { return conns() == 2 })

	// 60 events of 64 KiB: more than the kernel buffers for the stalled
	// client, fewer than the ring holds.
	const n = 60
	data := strings.Repeat("x", 64<<10)
	read := make(chan error, 1)
	go func() {
		br := bufio.NewReader(resp.Body)
		want := []string{"retry: 3000", ""}
		for i := 1; i <= n; i++ {
			want = append(want, fmt.Sprintf("id: %d", i), "data: "+data, "")
		}
		for _, w := range want {
			line, err := br.ReadString('\n')
			if err != nil {
				read <- err
				return
			}
			if got := strings.TrimSuffix(line, "\n"); got != w {
				read <- fmt.Errorf("got line %.40q, want %.40q", got, w)
				return
			}
		}
		read <- nil
	}()
	for i := 1; i <= n; i++ {
		p.publish(fmt.Sprint(i), []byte(data))
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the stalled client dropped", func() bool { return conns() == 1 })

	resp.Body.Close()
	poll.Until(t, 10*time.Second, "the closed client dropped", func() bool { return conns() == 0 })
}
