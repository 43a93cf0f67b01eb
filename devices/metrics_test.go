package devices

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The broker library's warnings that come once per message (a client over
// its quota, a refused packet) are logged once a period per message text.
func TestLevelHandlerBoundsRepeatedWarnings(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newLevelHandler(slog.LevelWarn, slog.NewTextHandler(&buf, nil))).With("lib", "mochi")
	for range 100 {
		log.Warn("client store quota reached", "client", "c1")
		log.Info("below the level")
	}
	log.Warn("packet ids exhausted")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "client store quota reached") || !strings.Contains(lines[1], "packet ids exhausted") {
		t.Fatalf("logged %d lines:\n%s", len(lines), buf.String())
	}
}
