package tsdb

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// Key layout (all integers big-endian so keys sort by time):
//
//	'x' target 0x00 path            → series id (4 bytes)    series index, no TTL
//	'd' hour(4) sid(4) firstTS(8) seq(4) → chunk of points   TTL = retention
//
// seq is the flush sequence number, so two chunks of one series that start at
// the same nanosecond (an agent resending old timestamps) never overwrite.
//
//	'l' sid(4)                      → latest point           TTL = retention
//	'm' "sid"                       → next series id
//	"format"                        → format version (internal/format)
//
// hour is Unix time in hours, so one hour of every series can be dropped
// with one DropPrefix when the store is over its size limit.
const (
	pfxIndex  = 'x'
	pfxData   = 'd'
	pfxLatest = 'l'
	pfxMeta   = 'm'
)

var formatKey = []byte("format")

const nsPerHour = int64(3600e9)

func hourOf(ts int64) uint32 {
	if ts < 0 {
		return 0
	}
	return uint32(ts / nsPerHour)
}

func indexKey(target, path string) []byte {
	k := make([]byte, 0, 2+len(target)+len(path))
	k = append(k, pfxIndex)
	k = append(k, target...)
	k = append(k, 0)
	return append(k, path...)
}

func dataKey(hour, sid uint32, ts int64, seq uint32) []byte {
	k := make([]byte, 21)
	binary.BigEndian.PutUint32(k[17:], seq)
	k[0] = pfxData
	binary.BigEndian.PutUint32(k[1:], hour)
	binary.BigEndian.PutUint32(k[5:], sid)
	binary.BigEndian.PutUint64(k[9:], uint64(ts))
	return k
}

func dataPrefix(hour, sid uint32) []byte {
	k := make([]byte, 9)
	k[0] = pfxData
	binary.BigEndian.PutUint32(k[1:], hour)
	binary.BigEndian.PutUint32(k[5:], sid)
	return k
}

func latestKey(sid uint32) []byte {
	k := make([]byte, 5)
	k[0] = pfxLatest
	binary.BigEndian.PutUint32(k[1:], sid)
	return k
}

// point is one stored sample.
type point struct {
	ts int64
	v  model.Value
}

// Chunk encoding, version 1:
//
//	version(1) count(uvarint) then per point:
//	  ts delta from the previous (first: from the key's ts) as zigzag varint,
//	  kind(1), value: int zigzag varint | uint uvarint | float 8 bytes LE |
//	  bool 1 byte | string, bytes, json: uvarint length + bytes.
//
// A run of ten-second samples of a counter takes 3 to 7 bytes a point.
const chunkVersion = 1

var errCorrupt = errors.New("corrupt chunk")

func appendValue(b []byte, v model.Value) []byte {
	b = append(b, byte(v.Kind))
	num, str := v.Raw()
	switch v.Kind {
	case model.KindInt:
		b = binary.AppendVarint(b, int64(num))
	case model.KindUint:
		b = binary.AppendUvarint(b, num)
	case model.KindFloat:
		b = binary.LittleEndian.AppendUint64(b, num)
	case model.KindBool:
		b = append(b, byte(num&1))
	default:
		b = binary.AppendUvarint(b, uint64(len(str)))
		b = append(b, str...)
	}
	return b
}

func readValue(b []byte) (model.Value, []byte, error) {
	if len(b) < 1 {
		return model.Value{}, nil, errCorrupt
	}
	k := model.Kind(b[0])
	b = b[1:]
	switch k {
	case model.KindInt:
		v, n := binary.Varint(b)
		if n <= 0 {
			return model.Value{}, nil, errCorrupt
		}
		return model.Int(v), b[n:], nil
	case model.KindUint:
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return model.Value{}, nil, errCorrupt
		}
		return model.Uint(v), b[n:], nil
	case model.KindFloat:
		if len(b) < 8 {
			return model.Value{}, nil, errCorrupt
		}
		return model.Float(math.Float64frombits(binary.LittleEndian.Uint64(b))), b[8:], nil
	case model.KindBool:
		if len(b) < 1 {
			return model.Value{}, nil, errCorrupt
		}
		return model.Bool(b[0] != 0), b[1:], nil
	case model.KindString, model.KindBytes, model.KindJSON, model.KindInvalid, model.KindDeleted:
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return model.Value{}, nil, errCorrupt
		}
		return model.FromRaw(k, 0, string(b[n:n+int(l)])), b[n+int(l):], nil
	}
	return model.Value{}, nil, errCorrupt
}

func encodeChunk(b []byte, first int64, pts []point) []byte {
	b = append(b, chunkVersion)
	b = binary.AppendUvarint(b, uint64(len(pts)))
	prev := first
	for _, p := range pts {
		b = binary.AppendVarint(b, p.ts-prev)
		prev = p.ts
		b = appendValue(b, p.v)
	}
	return b
}

// decodeChunk calls fn for each point; fn returns false to stop.
func decodeChunk(b []byte, first int64, fn func(point) bool) error {
	if len(b) < 1 || b[0] != chunkVersion {
		return errCorrupt
	}
	b = b[1:]
	n, m := binary.Uvarint(b)
	if m <= 0 {
		return errCorrupt
	}
	b = b[m:]
	prev := first
	for i := uint64(0); i < n; i++ {
		d, m := binary.Varint(b)
		if m <= 0 {
			return errCorrupt
		}
		b = b[m:]
		prev += d
		v, rest, err := readValue(b)
		if err != nil {
			return err
		}
		b = rest
		if !fn(point{prev, v}) {
			return nil
		}
	}
	return nil
}

func encodeLatest(ts int64, v model.Value) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 24), uint64(ts))
	return appendValue(b, v)
}

func decodeLatest(b []byte) (point, error) {
	if len(b) < 9 {
		return point{}, errCorrupt
	}
	v, _, err := readValue(b[8:])
	return point{int64(binary.BigEndian.Uint64(b)), v}, err
}
