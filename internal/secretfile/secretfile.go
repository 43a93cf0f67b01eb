// Package secretfile reads files that hold secrets (bearer tokens,
// passwords, private keys) and, as ssh does with its keys, refuses one that
// its group or other users may read or write: a secret every local user can
// read is no secret. The message names the file, its mode and the fix. It
// also reads the public files that go with them (CA certificates), so every
// TLS setting loads its files one way.
package secretfile

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrExposed: a secret file's mode lets its group or other users at it.
var ErrExposed = errors.New("is readable by group or others")

// ErrEmpty: a token file holds nothing but white space.
var ErrEmpty = errors.New("holds no token")

// exposed is the mode bits a secret file must not have.
const exposed fs.FileMode = 0o077

// Check refuses a secret file whose mode gives its group or other users any
// access. It follows symbolic links: the mode of the file read is checked.
func Check(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return checkMode(path, st.Mode())
}

func checkMode(path string, mode fs.FileMode) error {
	if mode.Perm()&exposed != 0 {
		return fmt.Errorf("secret file %s %w (mode %04o): run `chmod 600 %s`", path, ErrExposed, mode.Perm(), path)
	}
	return nil
}

// Read returns the content of the secret file path after checking its mode
// on the open file (no window between the check and the read).
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkMode(path, st.Mode()); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// ReadToken reads a bearer token: the content of the secret file path
// without surrounding white space, refused when empty.
func ReadToken(path string) ([]byte, error) {
	b, err := Read(path)
	if err != nil {
		return nil, err
	}
	tok := bytes.TrimSpace(b)
	if len(tok) == 0 {
		return nil, fmt.Errorf("%s %w", path, ErrEmpty)
	}
	return tok, nil
}

// LoadX509KeyPair is tls.LoadX509KeyPair that first refuses a private key
// file readable by group or others (the certificate is public).
func LoadX509KeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if err := Check(keyFile); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(certFile, keyFile)
}

// CertPool reads the PEM certificates of a CA file (public: its mode is not
// checked); an error names the file.
func CertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
