// This file is the bench over TLS (-tls): the server process serves HTTPS
// with a self-signed ECDSA P-256 certificate made at start, offering h2
// and http/1.1 as the esbridge program does (cmd/esbridge/tls.go), and
// the client process speaks HTTP/1.1 (-tls=h1) or HTTP/2 (-tls=h2) to it,
// one connection per stream, as browsers each open theirs. The handshakes
// happen while the clients connect, before a run is timed.

package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"time"
)

// The values of -tls.
const (
	tlsOff = "off" // plain HTTP/1.1 over TCP
	tlsH1  = "h1"  // HTTP/1.1 over TLS
	tlsH2  = "h2"  // HTTP/2 over TLS
)

// tlsScenarios are the scenarios -tls applies to; the others refuse it.
const tlsScenarios = "ABCW"

// checkTLS validates -tls against the scenarios asked for.
func checkTLS(mode, scenarios string) error {
	switch mode {
	case tlsOff:
		return nil
	case tlsH1, tlsH2:
	default:
		return fmt.Errorf("invalid value %q for flag -tls: want off, h1 or h2", mode)
	}
	for _, s := range scenarios {
		if !strings.ContainsRune(tlsScenarios, s) {
			return fmt.Errorf("scenario %c does not run over TLS (-tls applies to %s)", s, tlsScenarios)
		}
	}
	return nil
}

// transport names the -tls mode in the tables.
func transport(mode string) string {
	switch mode {
	case tlsH1:
		return "HTTP/1.1 over TLS"
	case tlsH2:
		return "HTTP/2 over TLS"
	}
	return "HTTP/1.1"
}

// selfSignedPEM returns a self-signed certificate for 127.0.0.1, valid for
// a day, and its ECDSA P-256 key, PEM-encoded.
func selfSignedPEM() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "esbridge-bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

// serverTLS returns the server's TLS configuration: a fresh self-signed
// certificate, h2 then http/1.1 offered, as cmd/esbridge configures it.
func serverTLS() (*tls.Config, error) {
	certPEM, keyPEM, err := selfSignedPEM()
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// A streamDialer opens the client process's streams in one -tls mode.
type streamDialer struct {
	mode string
	h1   *tls.Config     // -tls=h1: ALPN http/1.1
	h2   *http.Transport // -tls=h2: HTTP/2 only, a new connection per stream
}

func newStreamDialer(mode string) (*streamDialer, error) {
	d := &streamDialer{mode: mode}
	switch mode {
	case tlsOff, "":
		d.mode = tlsOff
	case tlsH1:
		// The certificate is the server's own, made at its start.
		d.h1 = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	case tlsH2:
		var p http.Protocols
		p.SetHTTP2(true)
		d.h2 = &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			Protocols:       &p,
		}
	default:
		return nil, fmt.Errorf("unknown TLS mode %q", mode)
	}
	return d, nil
}

// open connects to addr and requests path, and returns the response once
// its head is read; close ends the connection. The caller reads the body
// in reads of bufSize bytes at most.
func (d *streamDialer) open(addr, path string, bufSize int) (resp *http.Response, close func(), err error) {
	if d.mode == tlsH2 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cc, err := d.h2.NewClientConn(ctx, "https", addr)
		if err != nil {
			return nil, nil, err
		}
		req, err := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
		if err != nil {
			cc.Close()
			return nil, nil, err
		}
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Cache-Control", "no-cache")
		resp, err := cc.RoundTrip(req)
		if err != nil {
			cc.Close()
			return nil, nil, err
		}
		if resp.ProtoMajor != 2 {
			resp.Body.Close()
			cc.Close()
			return nil, nil, fmt.Errorf("response over %s, not HTTP/2", resp.Proto)
		}
		return resp, func() { resp.Body.Close(); cc.Close() }, nil
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if d.h1 != nil {
		tc := tls.Client(nc, d.h1)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		nc = tc
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n", path, addr)
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, nil, err
	}
	// http.ReadResponse undoes the chunked encoding.
	resp, err = http.ReadResponse(bufio.NewReaderSize(nc, bufSize), nil)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return resp, func() { nc.Close() }, nil
}
