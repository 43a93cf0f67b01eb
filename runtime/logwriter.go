package runtime

import (
	"bytes"
	"context"
	"log/slog"
)

// maxLine caps one logged line of guest output.
const maxLine = 4096

// lineLogger is an io.Writer that logs each line a guest writes to stderr
// (or stdout) with the task's logger, within the task's log rate limit.
// When tail is set it also keeps the first maxFailMessage bytes written,
// used as the message of a failed command. It is used by one call at a
// time.
type lineLogger struct {
	log    *slog.Logger
	limit  *logLimiter
	level  slog.Level
	stream string
	buf    []byte
	tail   *bytes.Buffer
}

func newLineLogger(log *slog.Logger, limit *logLimiter, level slog.Level, stream string, tail *bytes.Buffer) *lineLogger {
	return &lineLogger{log: log, limit: limit, level: level, stream: stream, tail: tail}
}

func (w *lineLogger) Write(p []byte) (int, error) {
	if w.tail != nil && w.tail.Len() < maxFailMessage {
		w.tail.Write(p[:min(len(p), maxFailMessage-w.tail.Len())])
	}
	if !w.log.Enabled(context.Background(), w.level) {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) >= maxLine {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
	if len(w.buf) == 0 {
		w.buf = nil // don't keep a large backing array alive
	}
	return len(p), nil
}

func (w *lineLogger) emit(line []byte) {
	if !w.limit.allow(context.Background(), w.level) {
		return
	}
	if len(line) > maxLine {
		line = line[:maxLine]
	}
	w.log.Log(context.Background(), w.level, "guest output", "stream", w.stream, "line", string(bytes.TrimRight(line, "\r")))
}

// Flush logs a final partial line.
func (w *lineLogger) Flush() {
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}
