package confval

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/outpost-edge/outpost/internal/secretfile"
)

// HostPort checks that addr at key is host:port with a numeric port.
func (c *Checker) HostPort(key, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.Errorf(key, "%q is not host:port", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		c.Errorf(key, "%q: port must be a number from 0 to 65535", addr)
	}
}

// File checks that file at key names a readable file; an empty name is a
// problem only when required.
func (c *Checker) File(key, file string, required bool) {
	if file == "" {
		if required {
			c.Errorf(key, "must name a file")
		}
		return
	}
	st, err := os.Stat(file)
	switch {
	case err != nil:
		if pe, ok := errors.AsType[*os.PathError](err); ok {
			err = pe.Err
		}
		c.Errorf(key, "cannot read %s: %v", file, err)
	case st.IsDir():
		c.Errorf(key, "%s is a directory, not a file", file)
	}
}

// SecretFile is File for a file holding a secret (a token, a password, a
// private key), which its group and other users must not be able to read.
func (c *Checker) SecretFile(key, file string, required bool) {
	c.File(key, file, required)
	if err := secretfile.Check(file); file != "" && errors.Is(err, secretfile.ErrExposed) {
		c.Errorf(key, "%v", err)
	}
}

// Rel makes the file name *p absolute against dir, the config file's
// directory; empty names, absolute names and builtin:NAME stay as they are.
func Rel(dir string, p *string) {
	if *p != "" && !strings.HasPrefix(*p, "builtin:") && !filepath.IsAbs(*p) && dir != "" {
		*p = filepath.Join(dir, *p)
	}
}
