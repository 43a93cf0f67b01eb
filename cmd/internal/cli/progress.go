package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress shows an upload and the phases that follow it (compiling,
// warming). On a terminal the upload is a progress bar; elsewhere (a log,
// a pipe, CI) each phase is one line and nothing is redrawn.
type Progress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar // nil off a terminal
	label string
	total int64
	start time.Time
	phase string
}

// NewProgress starts showing the upload of total bytes named label on w
// (standard error): a bar when w is a terminal, else the line
// "uploading LABEL (SIZE)".
func NewProgress(w io.Writer, label string, total int64) *Progress {
	p := &Progress{w: w, label: label, total: total, start: time.Now(), phase: "uploading"}
	if IsTerminal(w) && total > 0 {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("uploading "+label),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(80*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
		return p
	}
	fmt.Fprintf(w, "uploading %s (%s)\n", label, Size(total))
	return p
}

// Sent records that sent of the total bytes have been sent.
func (p *Progress) Sent(sent int64) {
	if p.bar != nil {
		_ = p.bar.Set64(min(sent, p.total))
	}
}

// Phase says that the work moved on to name ("compiling", "warming"),
// once per phase, and ends the upload bar.
func (p *Progress) Phase(name string) {
	if name == p.phase {
		return
	}
	if p.bar != nil && !p.bar.IsFinished() {
		_ = p.bar.Finish()
	}
	p.phase = name
	fmt.Fprintf(p.w, "%s...\n", name)
}

// Elapsed is the time since the upload started.
func (p *Progress) Elapsed() time.Duration { return time.Since(p.start) }

// StreamProgress shows a stream of unknown size going by (a backup or a
// restore) and the phases it finishes: on a terminal a byte count redrawn
// in place, elsewhere only one line per phase. Write counts the bytes (tee
// the stream through it).
type StreamProgress struct {
	w    io.Writer
	verb string
	bar  *progressbar.ProgressBar // nil off a terminal
}

// NewStreamProgress starts showing a stream on w, its lines begun by verb.
func NewStreamProgress(w io.Writer, verb string) *StreamProgress {
	p := &StreamProgress{w: w, verb: verb}
	if IsTerminal(w) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(verb),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionThrottle(200*time.Millisecond),
		)
	}
	return p
}

// Write counts b toward the bytes shown.
func (p *StreamProgress) Write(b []byte) (int, error) {
	if p.bar != nil {
		_ = p.bar.Add(len(b))
	}
	return len(b), nil
}

// Phase prints a finished phase on its own line: its name, how many items
// and bytes it moved.
func (p *StreamProgress) Phase(name string, items int, bytes int64) {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.w, "%s: %s: %d items, %s\n", p.verb, name, items, Size(bytes))
}

// Stop ends the line redrawn in place.
func (p *StreamProgress) Stop() {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
}
