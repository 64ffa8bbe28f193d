package main

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/tlstest"
)

// tlsClient returns a client with a connection pool of its own that trusts
// the certificates, speaking HTTP/2 unless h1 is set.
func tlsClient(t *testing.T, h1 bool, certs ...*tlstest.Cert) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlstest.Pool(certs...)}, ForceAttemptHTTP2: !h1}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// served returns the common name of the certificate that a new TLS
// connection to the bridge gets.
func served(t *testing.T, b *proc, certs ...*tlstest.Cert) string {
	t.Helper()
	resp, err := tlsClient(t, false, certs...).Get("https://" + b.Addr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz over TLS: %v", err)
	}
	resp.Body.Close()
	return resp.TLS.PeerCertificates[0].Subject.CommonName
}

// With -tls-cert and -tls-key, streams are served over HTTP/2 (and over
// HTTP/1.1 to clients that ask for it). Certificate files written over
// are taken for the connections that come next, with no restart, while
// the streams already open go on; files that are not a valid pair leave
// the certificate as it was, with a warning.
func TestTLSReload(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, url := ns.jetStream("TLS")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a, b := tlstest.New(t, "esbridge-a"), tlstest.New(t, "esbridge-b")
	a.Write(t, certFile, keyFile)
	// -max-clients puts the limiter, which wraps the streams' writers, in
	// the way too.
	br := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/s="+url,
		"-tls-cert", certFile, "-tls-key", keyFile, "-max-clients", "100")
	streamURL := "https://" + br.Addr + "/s"
	ready := tlsClient(t, false, a)
	poll.Until(t, waitFor, "/readyz over TLS answers 200", func() bool {
		resp, err := ready.Get("https://" + br.Addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	h2 := openStream(t, tlsClient(t, false, a), streamURL, nil)
	if h2.resp.ProtoMajor != 2 {
		t.Fatalf("stream served over %s, want HTTP/2", h2.resp.Proto)
	}
	h1 := openStream(t, tlsClient(t, true, a), streamURL, nil)
	if h1.resp.ProtoMajor != 1 {
		t.Fatalf("stream asked over HTTP/1.1 served over %s", h1.resp.Proto)
	}
	if h2.refused() || h1.refused() {
		t.Fatal("a stream was refused")
	}
	pub.publish("m1")
	h2.expectData("m1")
	h1.expectData("m1")

	b.Write(t, certFile, keyFile)
	waitServed := func(want string) {
		t.Helper()
		if !poll.Wait(waitFor, func() bool { return served(t, br, a, b) == want }) {
			t.Fatalf("new connections do not get certificate %s within %v:\n%s", want, waitFor, br.Output())
		}
	}
	waitServed("esbridge-b")
	br.WaitLog("TLS certificate reloaded", 1)
	pub.publish("m2")
	h2.expectData("m2")
	h1.expectData("m2")

	// A certificate half-written: b stays, and a warning says why.
	a.Write(t, certFile, keyFile)
	if err := writeFile(certFile, a.CertPEM[:len(a.CertPEM)/2]); err != nil {
		t.Fatal(err)
	}
	if !poll.Wait(waitFor, func() bool {
		if strings.Contains(br.Output(), "cannot be used") {
			return true
		}
		if got := served(t, br, a, b); got != "esbridge-b" {
			t.Fatalf("with a half-written certificate file, new connections get %s, want esbridge-b", got)
		}
		return false
	}) {
		t.Fatalf("no warning about the half-written certificate within %v:\n%s", waitFor, br.Output())
	}
	pub.publish("m3")
	h2.expectData("m3")
	h1.expectData("m3")
	if h2.resp.TLS.PeerCertificates[0].Subject.CommonName != "esbridge-a" {
		t.Errorf("the first stream's connection has certificate %s, want esbridge-a", h2.resp.TLS.PeerCertificates[0].Subject.CommonName)
	}
}

func writeFile(name string, b []byte) error { return os.WriteFile(name, b, 0o600) }
