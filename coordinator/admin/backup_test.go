package admin

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/backup"
)

// A backup that fails before writing answers an error the client shows; one
// that fails while streaming is cut off and the client calls it incomplete
// rather than saving half a backup as whole.
func TestBackupFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    backupFunc
		want func(error) bool
	}{
		{"before writing", func(io.Writer, bool) error { return ErrConflict }, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), ErrConflict.Error())
		}},
		{"while streaming", func(w io.Writer, _ bool) error {
			return backup.Write(w, backup.Source{
				State: func(w io.Writer) error {
					_, _ = w.Write(make([]byte, 5<<20)) // one chunk goes out
					return errors.New("disk read error")
				},
				DataDir: t.TempDir(),
			}, func(backup.Phase) {})
		}, func(err error) bool { return errors.Is(err, backup.ErrIncomplete) }},
		{"bad telemetry flag", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, &asyncNode{}, prometheus.NewRegistry())
			MountBackup(s, tc.b)
			c := run(t, s)
			if tc.b == nil {
				if code, body := send(t, c, "GET", "/v1/backup?telemetry=maybe"); code != 400 || !strings.Contains(string(body), "want true or false") {
					t.Fatalf("%d %s", code, body)
				}
				return
			}
			var saved strings.Builder
			if _, err := c.Backup(context.Background(), &saved, false, func(backup.Phase) {}); !tc.want(err) {
				t.Fatalf("err %v", err)
			}
		})
	}
}
