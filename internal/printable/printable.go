// Package printable tells text from binary data the one way Outpost shows
// both: UTF-8 without control characters other than tab, newline and
// carriage return is text (what snmpwalk prints as STRING rather than
// Hex-STRING, what the CLI prints as is rather than in base64).
package printable

import "unicode/utf8"

// Bytes reports whether b is printable text.
func Bytes(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return false
		}
	}
	return true
}
