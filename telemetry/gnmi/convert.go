package gnmi

import (
	"encoding/json"
	"io"
	"math"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// Value converts a gNMI TypedValue. JSON scalars (a number, string or
// bool, as json_ietf leaves are usually sent) become typed values; JSON
// objects and arrays stay JSON.
func Value(tv *gpb.TypedValue) (model.Value, bool) {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_StringVal:
		return model.String(v.StringVal), true
	case *gpb.TypedValue_AsciiVal:
		return model.String(v.AsciiVal), true
	case *gpb.TypedValue_IntVal:
		return model.Int(v.IntVal), true
	case *gpb.TypedValue_UintVal:
		return model.Uint(v.UintVal), true
	case *gpb.TypedValue_BoolVal:
		return model.Bool(v.BoolVal), true
	case *gpb.TypedValue_BytesVal:
		return model.Bytes(v.BytesVal), true
	case *gpb.TypedValue_ProtoBytes:
		return model.Bytes(v.ProtoBytes), true
	case *gpb.TypedValue_FloatVal:
		//lint:ignore SA1019 deprecated, still sent by older agents
		return model.Float(float64(v.FloatVal)), true
	case *gpb.TypedValue_DoubleVal:
		return model.Float(v.DoubleVal), true
	case *gpb.TypedValue_DecimalVal:
		//lint:ignore SA1019 deprecated, still sent by older agents
		d := v.DecimalVal
		return model.Float(float64(d.GetDigits()) / math.Pow10(int(d.GetPrecision()))), true
	case *gpb.TypedValue_JsonVal:
		return jsonValue(v.JsonVal), true
	case *gpb.TypedValue_JsonIetfVal:
		return jsonValue(v.JsonIetfVal), true
	case *gpb.TypedValue_LeaflistVal:
		arr := make([]any, 0, len(v.LeaflistVal.GetElement()))
		for _, e := range v.LeaflistVal.GetElement() {
			if ev, ok := Value(e); ok {
				arr = append(arr, ev)
			}
		}
		b, _ := json.Marshal(arr)
		return model.JSON(b), true
	case *gpb.TypedValue_AnyVal:
		b, _ := proto.Marshal(v.AnyVal)
		return model.Bytes(b), true
	}
	return model.Value{}, false
}

func jsonValue(b []byte) model.Value {
	if len(b) > 0 && (b[0] == '{' || b[0] == '[') {
		return model.JSON(b)
	}
	var x any
	d := json.NewDecoder(bytesReader(b))
	d.UseNumber()
	if err := d.Decode(&x); err != nil {
		return model.JSON(b)
	}
	switch s := x.(type) {
	case string:
		return model.String(s)
	case bool:
		return model.Bool(s)
	case json.Number:
		if i, err := s.Int64(); err == nil {
			return model.Int(i)
		}
		if f, err := s.Float64(); err == nil {
			return model.Float(f)
		}
	}
	return model.JSON(b)
}

// TypedValue converts back (for the gNMI server).
func TypedValue(v model.Value) *gpb.TypedValue {
	switch v.Kind {
	case model.KindInt:
		return &gpb.TypedValue{Value: &gpb.TypedValue_IntVal{IntVal: v.AsInt()}}
	case model.KindUint:
		return &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: v.AsUint()}}
	case model.KindFloat:
		f, _ := v.Number()
		return &gpb.TypedValue{Value: &gpb.TypedValue_DoubleVal{DoubleVal: f}}
	case model.KindBool:
		return &gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{BoolVal: v.AsBool()}}
	case model.KindString:
		return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: v.Text()}}
	case model.KindBytes:
		return &gpb.TypedValue{Value: &gpb.TypedValue_BytesVal{BytesVal: []byte(v.Text())}}
	case model.KindJSON:
		return &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(v.Text())}}
	}
	return nil
}

type byteReader struct {
	b []byte
	i int
}

func (r *byteReader) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}

func bytesReader(b []byte) io.Reader { return &byteReader{b: b} }
