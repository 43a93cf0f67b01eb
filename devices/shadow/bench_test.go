package shadow

import (
	"fmt"
	"testing"
)

// BenchmarkUpdate measures one device report through the shadow's per-update
// path: the request parsed, merged into a shadow of a dozen fields (desired
// and reported, one nested object), the delta computed, the replies and the
// stored record written.
func BenchmarkUpdate(b *testing.B) {
	var d Doc
	d, _, err := d.Update(mustParseB(b, `{"state":{"desired":{"led":"on","rate":10,"mode":"auto","limits":{"lo":1,"hi":9}},
		"reported":{"led":"off","rate":10,"mode":"auto","limits":{"lo":1,"hi":9},"temp":20.5,"fw":"1.2.3","uptime":1}}}`), 1)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		req, perr := ParseRequest(OpUpdate, fmt.Appendf(nil, `{"state":{"reported":{"temp":%d,"uptime":%d,"led":"on"}},"clientToken":"c%d"}`, i%40, i, i))
		if perr != nil {
			b.Fatal(perr)
		}
		next, r, err := d.Update(req, int64(i))
		if err != nil || r.Accepted == nil || r.Documents == nil {
			b.Fatal(err)
		}
		if len(next.Record()) == 0 {
			b.Fatal("no record")
		}
		d = next
	}
}

func mustParseB(b *testing.B, payload string) Request {
	b.Helper()
	req, err := ParseRequest(OpUpdate, []byte(payload))
	if err != nil {
		b.Fatalf("parse %s: %v", payload, err)
	}
	return req
}
