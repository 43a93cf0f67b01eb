package backup

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Printer shows the progress of a backup or restore on w: one line per
// finished phase; when live (w is a terminal), also the bytes so far on a
// line rewritten every tick.
type Printer struct {
	w     io.Writer
	verb  string
	live  bool
	n     atomic.Int64
	mu    sync.Mutex // serializes lines
	stop  chan struct{}
	done  chan struct{}
	close sync.Once
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// NewPrinter returns a Printer of verb ("backup", "restore") lines; a live
// one updates its byte count every tick until Stop.
func NewPrinter(w io.Writer, verb string, live bool, tick time.Duration) *Printer {
	p := &Printer{w: w, verb: verb, live: live, stop: make(chan struct{}), done: make(chan struct{})}
	if !live {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				fmt.Fprintf(p.w, "\r%s: %s\033[K", p.verb, humanBytes(p.n.Load()))
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// Phase prints a finished phase on its own line.
func (p *Printer) Phase(ph Phase) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "%s: %s\n", p.verb, ph)
}

// Write counts b toward the live byte count (tee the backup through it).
func (p *Printer) Write(b []byte) (int, error) {
	p.n.Add(int64(len(b)))
	return len(b), nil
}

// Stop ends the live line.
func (p *Printer) Stop() {
	p.close.Do(func() {
		if p.live {
			close(p.stop)
		}
	})
	<-p.done
	if p.live {
		p.mu.Lock()
		fmt.Fprint(p.w, "\r\033[K")
		p.mu.Unlock()
	}
}
