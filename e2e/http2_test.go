package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/tlstest"
)

// manyStreams is how many EventSources the page opens on one origin: more
// than the 6 connections per host that Chromium opens over HTTP/1.1.
const manyStreams = 12

// One page opens 12 EventSources on one origin. Over HTTPS, esbridge
// speaks HTTP/2 and all 12 receive live events at once, on one connection.
// Over plain HTTP/1.1, Chromium opens 6 connections per host: 6 streams
// receive, and the other 6 wait for a connection.
func TestHTTP2ManyStreams(t *testing.T) {
	t.Parallel()
	br := launchBrowser(t, "--ignore-certificate-errors")
	url, publish := newJetStream(t)
	dir := t.TempDir()
	cert := tlstest.New(t, "esbridge-e2e")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert.Write(t, certFile, keyFile)
	secure := startBridge(t, "-tls-cert", certFile, "-tls-key", keyFile, "-route", "/s="+url)
	plain := startBridge(t, "-route", "/s="+url)
	plain.waitReady()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlstest.Pool(cert)}}}
	poll.Until(t, waitFor, "esbridge over TLS is ready", func() bool {
		resp, err := hc.Get("https://" + secure.Addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	t.Run("https", func(t *testing.T) {
		pg := br.open("https://" + secure.Addr + "/healthz")
		if proto := pg.protocol(); proto != "h2" {
			t.Errorf("the page came over %q, want h2", proto)
		}
		pg.openStreams("/s")
		poll.Until(t, waitFor, "every stream is open", func() bool { return pg.streamsOpen() == manyStreams })
		if err := publish(0, "live-1"); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, waitFor, "every stream has live-1", func() bool { return pg.streamsWith("live-1") == manyStreams })
	})

	t.Run("http", func(t *testing.T) {
		pg := br.open("http://" + plain.Addr + "/healthz")
		if proto := pg.protocol(); proto != "http/1.1" {
			t.Errorf("the page came over %q, want http/1.1", proto)
		}
		pg.openStreams("/s")
		poll.Until(t, waitFor, "6 streams are open", func() bool { return pg.streamsOpen() >= 6 })
		if err := publish(0, "live-2"); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, waitFor, "6 streams have live-2", func() bool { return pg.streamsWith("live-2") >= 6 })
		// The others wait for a connection, however long: give them a few
		// seconds to show that they do not come.
		time.Sleep(3 * time.Second)
		if open, with := pg.streamsOpen(), pg.streamsWith("live-2"); open != 6 || with != 6 {
			t.Fatalf("over HTTP/1.1, %d streams are open and %d have live-2, want 6 and 6 (Chromium's connections per host):\n%s",
				open, with, pg.describeStreams())
		}
	})
}

// A streamState is what the page of openStreams records of one EventSource.
type streamState struct {
	Open bool     `json:"open"`
	Data []string `json:"data"`
}

// openStreams opens manyStreams EventSources on path in the page.
func (p *page) openStreams(path string) {
	p.b.t.Helper()
	p.eval(nil, fmt.Sprintf(`(() => {
		window.streams = [];
		for (let i = 0; i < %d; i++) {
			const s = { open: false, data: [] };
			const es = new EventSource(%q);
			es.onopen = () => { s.open = true; };
			es.onmessage = (e) => s.data.push(e.data);
			window.streams.push(s);
		}
		return null;
	})()`, manyStreams, path))
}

func (p *page) streams() []streamState {
	p.b.t.Helper()
	var ss []streamState
	p.eval(&ss, "window.streams")
	return ss
}

// streamsOpen returns how many of the page's streams are open.
func (p *page) streamsOpen() int {
	n := 0
	for _, s := range p.streams() {
		if s.Open {
			n++
		}
	}
	return n
}

// streamsWith returns how many of the page's streams received data.
func (p *page) streamsWith(data string) int {
	n := 0
	for _, s := range p.streams() {
		if slices.Contains(s.Data, data) {
			n++
		}
	}
	return n
}

func (p *page) describeStreams() string {
	return fmt.Sprintf("%+v", p.streams())
}

// protocol returns the protocol the page itself came over: "h2",
// "http/1.1".
func (p *page) protocol() string {
	p.b.t.Helper()
	var proto string
	p.eval(&proto, "performance.getEntriesByType('navigation')[0].nextHopProtocol")
	return proto
}
