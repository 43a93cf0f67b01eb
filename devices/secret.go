package devices

import (
	"fmt"
	"strings"

	"github.com/outpost-edge/outpost/internal/secretfile"
)

// readSecret reads a password file and trims the trailing line break. The
// value is never logged.
func readSecret(path string) ([]byte, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("read password file: %w", err)
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}
