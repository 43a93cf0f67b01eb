package remote

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	serverDate := now.Add(time.Hour).Format(http.TimeFormat) // server clock an hour ahead
	tests := []struct {
		name, v, date string
		want          time.Duration
		ok            bool
	}{
		{"seconds", "120", "", 2 * time.Minute, true},
		{"absent", "", "", 0, false},
		{"zero", "0", "", 0, false},
		{"negative", "-5", "", 0, false},
		{"garbage", "soon", "", 0, false},
		{"ten days", "864000", "", MaxRetryAfter, true},
		{"date against skewed server Date", now.Add(time.Hour + 30*time.Second).Format(http.TimeFormat), serverDate, 30 * time.Second, true},
		{"date without Date header", now.Add(45 * time.Second).Format(http.TimeFormat), "", 45 * time.Second, true},
		{"date in the past", now.Add(-time.Minute).Format(http.TimeFormat), "", 0, false},
		{"date ten days ahead", now.Add(240 * time.Hour).Format(http.TimeFormat), "", MaxRetryAfter, true},
		{"date with garbage Date", now.Add(10 * time.Second).Format(http.TimeFormat), "yesterday", 10 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.v, tt.date, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseRetryAfter(%q, %q) = %v, %v; want %v, %v", tt.v, tt.date, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParsePollResponse(t *testing.T) {
	tests := []struct {
		name, body string
		ok         bool
	}{
		{"empty", `{}`, true},
		{"one call", `{"calls":[{"seq":1,"id":"c1","attempt":1,"task":"echo","input":"aGk=","lease_ms":30000}]}`, true},
		{"truncated", `{"calls":[{"seq":1,"id":"c1"`, false},
		{"no id", `{"calls":[{"seq":1,"attempt":1,"task":"echo","lease_ms":1}]}`, false},
		{"slash in id", `{"calls":[{"seq":1,"id":"a/b","attempt":1,"task":"echo","lease_ms":1}]}`, false},
		{"zero seq", `{"calls":[{"id":"c","attempt":1,"task":"echo","lease_ms":1}]}`, false},
		{"digest", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"t","lease_ms":1,"digest":"sha256:` + strings.Repeat("ab", 32) + `"}]}`, true},
		{"digest not sha256", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"t","lease_ms":1,"digest":"md5:00"}]}`, false},
		{"digest upper case", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"t","lease_ms":1,"digest":"sha256:` + strings.Repeat("AB", 32) + `"}]}`, false},
		{"digest short", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"t","lease_ms":1,"digest":"sha256:abc"}]}`, false},
		{"bad effect", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"echo","lease_ms":1,"effect":"maybe"}]}`, false},
		{"negative ttl", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"echo","lease_ms":1,"start_by_ms":-1}]}`, false},
		{"bad base64", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"echo","lease_ms":1,"input":"***"}]}`, false},
		{"not json", `<html>proxy error</html>`, false},
		{"input at the limit", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"echo","lease_ms":1,"input":"` + base64.StdEncoding.EncodeToString(make([]byte, MaxInput)) + `"}]}`, true},
		{"input over the limit", `{"calls":[{"seq":1,"id":"c","attempt":1,"task":"echo","lease_ms":1,"input":"` + base64.StdEncoding.EncodeToString(make([]byte, MaxInput+1)) + `"}]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePollResponse([]byte(tt.body))
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrProtocol) {
				t.Errorf("error %v is not ErrProtocol", err)
			}
		})
	}
}

func FuzzParsePollResponse(f *testing.F) {
	f.Add([]byte(`{"calls":[{"seq":1,"id":"c1","attempt":1,"task":"echo","input":"aGk=","lease_ms":30000}],"cancel":["x"]}`))
	f.Add([]byte(`{"calls":[{"seq":1,"id":"c1"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParsePollResponse(b)
		if err != nil {
			return
		}
		for _, c := range r.Calls {
			if c.ID == "" || c.Seq == 0 || c.LeaseMS <= 0 || c.Attempt < 1 {
				t.Fatalf("accepted an invalid call %+v", c)
			}
		}
	})
}

func FuzzParseBatchResponse(f *testing.F) {
	f.Add([]byte(`{"items":[{"call_id":"a","attempt":1,"status":201}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseBatchResponse(b)
		if err != nil {
			return
		}
		for _, it := range r.Items {
			if it.Status < 100 || it.Status > 599 {
				t.Fatalf("accepted status %d", it.Status)
			}
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	f.Add("120", "")
	f.Add("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:27:00 GMT")
	now := time.Now()
	f.Fuzz(func(t *testing.T, v, date string) {
		if d, ok := ParseRetryAfter(v, date, now); ok && (d <= 0 || d > MaxRetryAfter) {
			t.Fatalf("ParseRetryAfter(%q,%q) = %v", v, date, d)
		}
	})
}

func TestBatchBySize(t *testing.T) {
	mib := 1 << 20
	for _, tc := range []struct {
		name  string
		sizes []int
		want  int
	}{
		{"small ones all go", []int{10, 20, 30}, 3},
		{"one too large still goes", []int{40 * mib, 10}, 1},
		{"cut before the limit", []int{6 * mib, 6 * mib, 6 * mib, 1}, 2},
		{"exactly the limit", []int{8 * mib, 8 * mib, 1}, 2},
		{"none", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := batchBySize(tc.sizes, func(n int) int { return n }); len(got) != tc.want {
				t.Errorf("batch of %d, want %d", len(got), tc.want)
			}
		})
	}
}
