package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/esbridge/esbridge/internal/certreload"
)

// idleTimeout closes keep-alive connections that carry no request or
// stream. It does not touch a stream, which is one long response, however
// quiet. It is longer than the retry delays the streams send (at most 15 s
// when over a limit, a few seconds after a drain), so that a browser that
// comes back after one reuses its connection and TLS session, and short
// enough that idle sockets of gone browsers are freed within a minute.
const idleTimeout = 60 * time.Second

// h2PingAfter is how long an HTTP/2 connection may send nothing before the
// server pings it; one that does not answer in 15 s is closed, with its
// streams. A browser sends nothing on a stream once it is open, so that is
// how a dead HTTP/2 connection is found: its streams' heartbeats would
// only fill buffers.
const h2PingAfter = 30 * time.Second

// loadCerts loads the -tls-cert and -tls-key pair, if given. Its errors
// name the flag.
func loadCerts(c *config, logger *slog.Logger) (*certreload.Reloader, error) {
	if c.tlsCert == "" {
		return nil, nil
	}
	certs, err := certreload.New(c.tlsCert, c.tlsKey, logger)
	var fe *certreload.FileError
	if errors.As(err, &fe) {
		if fe.Key {
			return nil, fmt.Errorf("invalid value %q for flag -tls-key: %w", c.tlsKey, fe.Err)
		}
		return nil, fmt.Errorf("invalid value %q for flag -tls-cert: %w", c.tlsCert, fe.Err)
	}
	return certs, err
}

// configureTLS makes srv serve HTTPS, with HTTP/2, with the certificate of
// certs; a nil certs leaves it serving plain HTTP/1.1.
func configureTLS(srv *http.Server, certs *certreload.Reloader) {
	srv.IdleTimeout = idleTimeout
	if certs == nil {
		return
	}
	srv.TLSConfig = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: certs.GetCertificate,
		// h2 first: browsers then open all their streams to an origin on
		// one connection, instead of at most six over HTTP/1.1.
		NextProtos: []string{"h2", "http/1.1"},
	}
	srv.HTTP2 = &http.HTTP2Config{SendPingTimeout: h2PingAfter}
}

// serve serves srv on ln, with TLS if srv has a TLS configuration.
func serve(srv *http.Server, ln net.Listener) error {
	if srv.TLSConfig != nil {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}
