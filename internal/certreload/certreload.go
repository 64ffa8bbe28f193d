// Package certreload serves a TLS certificate from a certificate file and
// a key file in PEM, and reloads them when they change on disk: no restart,
// and no connection is dropped, since a certificate only matters to the
// handshakes that come after it.
package certreload

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often, at most, the files are read again.
const DefaultInterval = time.Second

// maxFile bounds the size of a certificate or key file.
const maxFile = 1 << 20

// A FileError is a certificate or key file that cannot be used, as New
// returns it.
type FileError struct {
	File string // the file's name
	Key  bool   // whether it is the key file
	Err  error  // why it cannot be used
}

func (e *FileError) Error() string {
	what := "certificate"
	if e.Key {
		what = "key"
	}
	return fmt.Sprintf("certreload: %s file %q: %v", what, e.File, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }

// A Reloader holds the certificate of a pair of files. Its GetCertificate
// reads the files again when it is called and a second (Interval) has
// passed since it last did; if their content changed and is a valid pair,
// later handshakes get the new certificate. While the files cannot be
// read or are not a valid pair (a file half-written, a certificate without
// its new key yet), the certificate in use stays, and each distinct error
// is logged once as a warning. Connections made before a change keep
// theirs.
//
// A Reloader is safe for concurrent use.
type Reloader struct {
	certFile, keyFile string
	logger            *slog.Logger
	interval          time.Duration

	cert atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // held by the caller that reads the files
	checked time.Time  // when the files were last read
	loaded  pair       // the content of the certificate in use
	bad     pair       // the content last found invalid
	warned  string     // the error last warned about
}

// pair is the content of the two files.
type pair struct{ cert, key []byte }

func (p pair) equal(q pair) bool { return bytes.Equal(p.cert, q.cert) && bytes.Equal(p.key, q.key) }

// New loads the certificate of certFile and keyFile and returns a Reloader
// of them; logger (nil discards) gets a line for each reload, and a
// warning for each pair that cannot be used. Its error is a *FileError,
// naming the file at fault.
func New(certFile, keyFile string, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, logger: logger, interval: DefaultInterval}
	p, err := r.read()
	if err != nil {
		return nil, err
	}
	cert, err := r.parse(p)
	if err != nil {
		return nil, err
	}
	r.cert.Store(cert)
	r.loaded = p
	r.checked = time.Now()
	return r, nil
}

// Certificate returns the certificate in use, without reading the files.
func (r *Reloader) Certificate() *tls.Certificate { return r.cert.Load() }

// GetCertificate returns the certificate for a handshake, as
// tls.Config.GetCertificate, reading the files first if it is time to.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.check()
	return r.cert.Load(), nil
}

// check reads the files again if it is time to, unless another handshake
// is doing it, and takes their certificate if it changed and is valid.
func (r *Reloader) check() {
	if !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < r.interval {
		return
	}
	r.checked = now
	p, err := r.read()
	var cert *tls.Certificate
	switch {
	case err != nil:
	case p.equal(r.loaded):
		r.bad, r.warned = pair{}, ""
		return
	case p.equal(r.bad):
		return // parsed and warned about already
	default:
		cert, err = r.parse(p)
	}
	if err != nil {
		r.bad = p
		if msg := err.Error(); msg != r.warned {
			r.warned = msg
			r.logger.Warn("TLS certificate files changed but cannot be used; serving the previous certificate", "err", err)
		}
		return
	}
	r.cert.Store(cert)
	r.loaded, r.bad, r.warned = p, pair{}, ""
	r.logger.Info("TLS certificate reloaded", certAttrs(cert.Leaf)...)
}

// read reads both files.
func (r *Reloader) read() (pair, error) {
	var p pair
	var err error
	if p.cert, err = readFile(r.certFile); err != nil {
		return pair{}, &FileError{File: r.certFile, Err: err}
	}
	if p.key, err = readFile(r.keyFile); err != nil {
		return pair{}, &FileError{File: r.keyFile, Key: true, Err: err}
	}
	return p, nil
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err == nil && len(b) > maxFile {
		err = fmt.Errorf("larger than %d bytes", maxFile)
	}
	return b, err
}

// parse returns the certificate of p: the certificate file's errors are
// told apart from the key file's.
func (r *Reloader) parse(p pair) (*tls.Certificate, error) {
	rest := p.cert
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, &FileError{File: r.certFile, Err: errors.New("no PEM CERTIFICATE block")}
		}
		if block.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return nil, &FileError{File: r.certFile, Err: err}
			}
			break
		}
	}
	cert, err := tls.X509KeyPair(p.cert, p.key)
	if err != nil {
		return nil, &FileError{File: r.keyFile, Key: true, Err: err}
	}
	return &cert, nil
}

// certAttrs returns what the logs say of a certificate.
func certAttrs(leaf *x509.Certificate) []any {
	if leaf == nil {
		return nil
	}
	return []any{"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
}

// LogAttrs returns attributes describing the certificate in use, for a
// startup line: its subject, serial number and end of validity.
func (r *Reloader) LogAttrs() []any { return certAttrs(r.cert.Load().Leaf) }
