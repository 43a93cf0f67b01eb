package shadow

import (
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
)

// The replies and records of an update are written by hand from the
// shadow's maps: encoding/json's reflection over map[string]any (keys
// sorted through reflect values, every map boxed) was most of an update's
// CPU. The output is what json.Marshal writes for the same values: keys
// sorted, strings escaped alike (HTML characters included), numbers as
// decoded.

// appendValue writes v, a JSON value as the decoder (UseNumber) and this
// package build it: map[string]any, []any, string, json.Number, bool, nil.
// Anything else (none is expected) goes through json.Marshal.
func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendString(b, x)
	case json.Number:
		if x == "" {
			return append(b, '0') // as json.Marshal writes the zero Number
		}
		return append(b, x...)
	case bool:
		return strconv.AppendBool(b, x)
	case map[string]any:
		return appendObject(b, x)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, e)
		}
		return append(b, ']')
	}
	return append(b, mustJSON(v)...)
}

// appendObject writes m with its keys sorted; a nil map is null, as
// json.Marshal writes it.
func appendObject(b []byte, m map[string]any) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendValue(b, m[k])
	}
	return append(b, '}')
}

// appendSections writes {"desired":...,"reported":...}, a section left
// out when it has no fields (omitempty), as the state and metadata
// objects of a document hold them.
func appendSections(b []byte, desired, reported map[string]any) []byte {
	b = append(b, '{')
	if len(desired) > 0 {
		b = appendObject(append(b, `"desired":`...), desired)
	}
	if len(reported) > 0 {
		if len(desired) > 0 {
			b = append(b, ',')
		}
		b = appendObject(append(b, `"reported":`...), reported)
	}
	return append(b, '}')
}

// appendField writes ,"name": (a field after the first).
func appendField(b []byte, name string) []byte {
	return append(append(append(b, ",\""...), name...), "\":"...)
}

// appendToken writes the clientToken field unless it is empty
// (omitempty).
func appendToken(b []byte, clientToken string) []byte {
	if clientToken == "" {
		return b
	}
	return appendString(appendField(b, "clientToken"), clientToken)
}

const hexDigits = "0123456789abcdef"

// appendString writes s quoted as json.Marshal does: ", \ and control
// characters escaped (\n, \r, \t, \b, \f short), <, > and & as \u003c, \u003e, \u0026, U+2028 and
// U+2029 escaped, invalid UTF-8 as U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(append(b, s[start:i]...), `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(append(b, s[start:]...), '"')
}
