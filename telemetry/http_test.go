package telemetry

import (
	"strings"
	"testing"
	"time"
)

func TestParseQuery(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name                 string
		since, until, bucket string
		limit                int
		wantSince, wantUntil time.Time
		wantBucket           time.Duration
		wantErr              string
	}{
		{name: "defaults", wantSince: now.Add(-time.Hour), wantUntil: now},
		{name: "durations", since: "90m", until: "30s", bucket: "1m", limit: 5,
			wantSince: now.Add(-90 * time.Minute), wantUntil: now.Add(-30 * time.Second), wantBucket: time.Minute},
		{name: "rfc 3339", since: "2026-05-01T08:00:00Z", until: "2026-05-01T09:30:00.5+01:00",
			wantSince: now.Add(-2 * time.Hour), wantUntil: time.Date(2026, 5, 1, 8, 30, 0, 5e8, time.UTC)},
		{name: "bad since", since: "yesterday", wantErr: "since: want a duration back from now (1h) or an RFC 3339 time"},
		{name: "bad until", until: "2026-05-01", wantErr: "until: want a duration"},
		{name: "bad bucket", bucket: "often", wantErr: "bucket: want a positive duration such as 1m"},
		{name: "zero bucket", bucket: "0s", wantErr: "bucket: want a positive duration"},
		{name: "negative limit", limit: -1, wantErr: "limit: want a positive number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ParseQuery("sw*", "/system/...", tc.since, tc.until, tc.bucket, tc.limit, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if q.Target != "sw*" || q.Path != "/system/..." || q.Limit != tc.limit || q.Bucket != tc.wantBucket ||
				!q.Since.Equal(tc.wantSince) || !q.Until.Equal(tc.wantUntil) {
				t.Fatalf("got %+v, want since %s until %s bucket %s", q, tc.wantSince, tc.wantUntil, tc.wantBucket)
			}
		})
	}
}
