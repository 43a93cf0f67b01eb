package secretfile

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testpki"
)

// Only modes without any group or other bits pass; a symbolic link is
// judged by the file it points to.
func TestModes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o700, true},
		{0o640, false}, {0o644, false}, {0o604, false}, {0o620, false}, {0o602, false}, {0o660, false},
	} {
		p := filepath.Join(dir, tc.mode.String())
		if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, tc.mode); err != nil {
			t.Fatal(err)
		}
		b, rerr := Read(p)
		cerr := Check(p)
		if tc.ok {
			if rerr != nil || cerr != nil || string(b) != "s3cret\n" {
				t.Errorf("%v: refused: %q %v %v", tc.mode, b, rerr, cerr)
			}
			continue
		}
		want := fmt.Sprintf("secret file %s is readable by group or others (mode %04o): run `chmod 600 %s`", p, tc.mode.Perm(), p)
		for _, err := range []error{rerr, cerr} {
			if !errors.Is(err, ErrExposed) || err.Error() != want {
				t.Errorf("%v: %v, want %s", tc.mode, err, want)
			}
		}
		if b != nil {
			t.Errorf("%v: content returned with the refusal", tc.mode)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, os.FileMode(0o644).String()), link); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(link); !errors.Is(err, ErrExposed) {
		t.Errorf("link to a 0644 file: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := LoadX509KeyPair(filepath.Join(dir, "cert"), filepath.Join(dir, os.FileMode(0o640).String())); !errors.Is(err, ErrExposed) {
		t.Errorf("exposed key: %v", err)
	}
}

// CertPool reads a CA file's certificates; a missing file or one without a
// PEM certificate is refused with its name.
func TestCertPool(t *testing.T) {
	ca := testpki.New(t, t.TempDir(), "ca")
	pool, err := CertPool(ca.CAFile)
	if err != nil || pool == nil || pool.Equal(x509.NewCertPool()) {
		t.Fatalf("CertPool(%s) = %v, %v: want the CA", ca.CAFile, pool, err)
	}
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{junk, filepath.Join(t.TempDir(), "missing.pem")} {
		if _, err := CertPool(file); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("CertPool(%s): %v, want an error naming the file", file, err)
		}
	}
}
