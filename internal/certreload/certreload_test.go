package certreload

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/esbridge/esbridge/internal/tlstest"
)

// The certificate served follows the files, at most a second late; a pair
// that cannot be used leaves the previous certificate in use, with one
// warning.
func TestReload(t *testing.T) {
	t.Parallel()
	a, b, c := tlstest.New(t, "a"), tlstest.New(t, "b"), tlstest.New(t, "c")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a.Write(t, certFile, keyFile)

	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		r, err := New(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		served := func() string {
			t.Helper()
			cert, err := r.GetCertificate(nil)
			if err != nil {
				t.Fatal(err)
			}
			return cert.Leaf.Subject.CommonName
		}
		expect := func(want string, warnings int) {
			t.Helper()
			if got := served(); got != want {
				t.Fatalf("serving certificate %q, want %q; logs:\n%s", got, want, logs.String())
			}
			if got := strings.Count(logs.String(), "level=WARN"); got != warnings {
				t.Fatalf("%d warnings, want %d; logs:\n%s", got, warnings, logs.String())
			}
		}
		expect("a", 0)

		b.Write(t, certFile, keyFile)
		expect("a", 0) // read again a second after the last time
		time.Sleep(time.Second)
		expect("b", 0)
		if !strings.Contains(logs.String(), "TLS certificate reloaded") || !strings.Contains(logs.String(), "CN=b") {
			t.Errorf("no reload logged with the new subject:\n%s", logs.String())
		}

		// The certificate is written before its key: b stays until the key
		// comes, with one warning however many handshakes meanwhile.
		write(t, certFile, c.CertPEM)
		for range 3 {
			time.Sleep(time.Second)
			expect("b", 1)
		}
		write(t, keyFile, c.KeyPEM)
		time.Sleep(time.Second)
		expect("c", 1)

		// Half a certificate, then no file at all, then the whole again.
		write(t, certFile, c.CertPEM[:len(c.CertPEM)/2])
		time.Sleep(time.Second)
		expect("c", 2)
		if err := os.Remove(certFile); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		expect("c", 3)
		a.Write(t, certFile, keyFile)
		time.Sleep(time.Second)
		expect("a", 3)
	})
}

func write(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// New names the file at fault.
func TestNewErrors(t *testing.T) {
	t.Parallel()
	a, b := tlstest.New(t, "a"), tlstest.New(t, "b")
	dir := t.TempDir()
	file := func(name string, content []byte) string {
		p := filepath.Join(dir, name)
		write(t, p, content)
		return p
	}
	aCert, aKey, bKey := file("a.pem", a.CertPEM), file("a.key", a.KeyPEM), file("b.key", b.KeyPEM)
	garbage := file("garbage", []byte("not PEM"))
	missing := filepath.Join(dir, "missing")
	cases := []struct {
		name            string
		cert, key, file string
		isKey           bool
	}{
		{"missing certificate", missing, aKey, missing, false},
		{"missing key", aCert, missing, missing, true},
		{"garbage certificate", garbage, aKey, garbage, false},
		{"key for the certificate", aKey, aKey, aKey, false},
		{"garbage key", aCert, garbage, garbage, true},
		{"certificate for the key", aCert, aCert, aCert, true},
		{"key of another certificate", aCert, bKey, bKey, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cert, tc.key, nil)
			var fe *FileError
			if !errors.As(err, &fe) || fe.File != tc.file || fe.Key != tc.isKey {
				t.Fatalf("New(%s, %s) = %v, want a FileError for %s (key %v)", tc.cert, tc.key, err, tc.file, tc.isKey)
			}
			t.Log(err)
		})
	}
	if _, err := New(aCert, aKey, nil); err != nil {
		t.Fatal(err)
	}
}
