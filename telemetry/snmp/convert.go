package snmp

import (
	"fmt"
	"math"
	"math/big"
	"strings"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-edge/outpost/internal/printable"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Convert turns one SNMP varbind value into a typed value. It reports
// false for the exceptions (noSuchObject, noSuchInstance, endOfMibView)
// and NULL, which carry no value.
//
//	Integer → int; Counter32, Gauge32, TimeTicks, Uinteger32, Counter64 → uint;
//	OctetString → string when valid printable UTF-8, else bytes;
//	IPAddress, ObjectIdentifier → string; Opaque float/double → float.
func Convert(pdu gosnmp.SnmpPDU) (model.Value, bool) {
	switch pdu.Type {
	case gosnmp.Integer:
		if n, ok := toInt64(pdu.Value); ok {
			return model.Int(n), true
		}
	case gosnmp.Counter32, gosnmp.Gauge32, gosnmp.TimeTicks, gosnmp.Uinteger32, gosnmp.Counter64:
		if n, ok := toUint64(pdu.Value); ok {
			return model.Uint(n), true
		}
	case gosnmp.OctetString, gosnmp.BitString:
		b, ok := pdu.Value.([]byte)
		if !ok {
			if s, ok := pdu.Value.(string); ok {
				b = []byte(s)
			} else {
				break
			}
		}
		if printable.Bytes(b) {
			return model.String(string(b)), true
		}
		return model.Bytes(b), true
	case gosnmp.IPAddress, gosnmp.ObjectIdentifier:
		if s, ok := pdu.Value.(string); ok {
			return model.String(strings.TrimPrefix(s, ".")), true
		}
	case gosnmp.OpaqueFloat:
		if f, ok := pdu.Value.(float32); ok {
			return model.Float(float64(f)), true
		}
	case gosnmp.OpaqueDouble:
		if f, ok := pdu.Value.(float64); ok {
			return model.Float(f), true
		}
	case gosnmp.Opaque:
		if b, ok := pdu.Value.([]byte); ok {
			return model.Bytes(b), true
		}
	}
	return model.Value{}, false
}

// Counter reports whether the type is a counter (rates and wrap apply) and its width in bits.
func Counter(t gosnmp.Asn1BER) (bits int, ok bool) {
	switch t {
	case gosnmp.Counter32:
		return 32, true
	case gosnmp.Counter64:
		return 64, true
	}
	return 0, false
}

// Delta returns cur - prev for a counter of the given width, treating
// cur < prev as one wrap. For 64-bit counters a "wrap" is far more likely
// a reset (device reboot), reported as ok=false.
func Delta(prev, cur uint64, bits int) (uint64, bool) {
	if cur >= prev {
		return cur - prev, true
	}
	if bits == 32 && prev <= math.MaxUint32 && cur <= math.MaxUint32 {
		return (cur + (1 << 32)) - prev, true
	}
	return 0, false
}

func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint:
		return int64(n), true
	case uint32:
		return int64(n), true
	case *big.Int:
		if n != nil && n.IsInt64() {
			return n.Int64(), true
		}
	}
	return 0, false
}

func toUint64(v any) (uint64, bool) {
	switch n := v.(type) {
	case uint:
		return uint64(n), true
	case uint32:
		return uint64(n), true
	case uint64:
		return n, true
	case int:
		if n >= 0 {
			return uint64(n), true
		}
	case int64:
		if n >= 0 {
			return uint64(n), true
		}
	case *big.Int:
		if n != nil && n.IsUint64() {
			return n.Uint64(), true
		}
	}
	return 0, false
}

// OIDPath is the default path of a numeric OID: /snmp/1.3.6.1.2.1.1.3.0.
func OIDPath(oid string) string { return "/snmp/" + strings.TrimPrefix(oid, ".") }

// formatPDU is used in errors and tests.
func formatPDU(p gosnmp.SnmpPDU) string { return fmt.Sprintf("%s %v %v", p.Name, p.Type, p.Value) }
