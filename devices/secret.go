package devices

import (
	"fmt"
	"os"
	"strings"
)

// readSecret reads a password file and trims the trailing line break. The
// value is never logged.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read password file: %w", err)
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}
