package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrKey is returned for a key file that holds no usable key.
var ErrKey = errors.New("auth: bad key")

// maxKeyFileBytes bounds a key file.
const maxKeyFileBytes = 1 << 20

// asymmetricMethods are the algorithms of public keys.
var asymmetricMethods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// methodsFor returns the algorithms that verify with k: HS* for a secret,
// RS* and PS* for RSA, the ES* of the curve for ECDSA, EdDSA for Ed25519;
// nil for anything else. Pinning the algorithm to the key's type is what
// keeps an HS256 token signed with a public key's bytes out.
func methodsFor(k any) []string {
	switch k := k.(type) {
	case []byte:
		return []string{"HS256", "HS384", "HS512"}
	case *rsa.PublicKey:
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}
		case elliptic.P384():
			return []string{"ES384"}
		case elliptic.P521():
			return []string{"ES512"}
		}
	case ed25519.PublicKey:
		return []string{"EdDSA"}
	}
	return nil
}

// ReadSecretFile reads an HMAC secret: the file's bytes, less one trailing
// newline (as echo writes it). Its errors wrap ErrKey or the file's error;
// they never quote the secret.
func ReadSecretFile(path string) ([]byte, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) < MinSecretBytes {
		return nil, fmt.Errorf("%w: the secret has %d bytes, want at least %d", ErrKey, len(b), MinSecretBytes)
	}
	return b, nil
}

// ReadPublicKeyFile reads a PEM public key file (see ParsePublicKeyPEM).
func ReadPublicKeyFile(path string) (crypto.PublicKey, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePublicKeyPEM(b)
}

// ParsePublicKeyPEM parses the first PEM block of b: a PUBLIC KEY (PKIX:
// RSA, ECDSA on P-256, P-384 or P-521, or Ed25519), an RSA PUBLIC KEY
// (PKCS #1) or a CERTIFICATE, whose key is taken. It returns ErrKey,
// wrapped, for anything else, private keys included.
func ParsePublicKeyPEM(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrKey)
	}
	var k any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(block.Bytes); err == nil {
			k = c.PublicKey
		}
	default:
		return nil, fmt.Errorf("%w: a PEM block of type %q, want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", ErrKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	if methodsFor(k) == nil {
		return nil, fmt.Errorf("%w: a %T, want RSA, ECDSA (P-256, P-384, P-521) or Ed25519", ErrKey, k)
	}
	return k, nil
}

// readFile reads a key file of at most maxKeyFileBytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("%w: the file is over %d bytes", ErrKey, maxKeyFileBytes)
	}
	return b, nil
}
