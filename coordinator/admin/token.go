package admin

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/outpost-edge/outpost/internal/secretfile"
)

// TokenFileName is the admin token's file in the data dir.
const TokenFileName = "admin.token"

// TokenEnv names the environment variable a client takes the token from.
const TokenEnv = "OUTPOST_TOKEN"

// ErrNoToken: a token file holds nothing.
var ErrNoToken = secretfile.ErrEmpty

// DataDirTokenFile is the token file of a data dir.
func DataDirTokenFile(dataDir string) string { return filepath.Join(dataDir, TokenFileName) }

// EnsureToken reads the token in path, or creates the file with a new
// random token (32 bytes, hex) and mode 0600 if it does not exist. A file
// that group or others may read is refused.
func EnsureToken(path string) ([]byte, error) {
	tok, err := ReadToken(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	tok = []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process made it first
		return ReadToken(path)
	}
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	_, err = f.Write(append(tok, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}

// ReadToken reads a token file (surrounding white space dropped), refusing
// one that group or others may read.
func ReadToken(path string) ([]byte, error) {
	tok, err := secretfile.ReadToken(path)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}
