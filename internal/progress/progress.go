// Package progress shows the progress of a long operation to a person: a
// progress bar when the writer is a terminal, else a line at every tenth of
// the work (logs and pipes get no carriage returns). Machine-readable output
// is the callers' business (they keep it off the writer they give here).
package progress

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar reports one operation of total bytes (total ≤ 0: unknown until Set
// says).
type Bar struct {
	w         io.Writer
	name      string
	total     int64
	bar       *progressbar.ProgressBar
	lastTenth int
	done      bool
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// New starts reporting the operation called name on w.
func New(w io.Writer, name string, total int64) *Bar {
	b := &Bar{w: w, name: name, total: total, lastTenth: -1}
	if IsTerminal(w) {
		b.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription(name), progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
	}
	return b
}

// Set reports done bytes of total (which may change: a total found later).
func (b *Bar) Set(done, total int64) {
	if b.done {
		return
	}
	if total > 0 && total != b.total {
		b.total = total
		if b.bar != nil {
			b.bar.ChangeMax64(total)
		}
	}
	if b.bar != nil {
		b.bar.Set64(done)
		return
	}
	if b.total <= 0 {
		return
	}
	if tenth := int(10 * done / b.total); tenth > b.lastTenth {
		b.lastTenth = tenth
		fmt.Fprintf(b.w, "%s: %3d%% (%s of %s)\n", b.name, 100*done/b.total, Bytes(done), Bytes(b.total))
	}
}

// Finish ends the report (the bar completes; a last line if none said 100%).
func (b *Bar) Finish() {
	if b.done {
		return
	}
	if b.bar != nil {
		b.bar.Finish()
	} else if b.total > 0 && b.lastTenth < 10 {
		b.Set(b.total, b.total)
	}
	b.done = true
}

// Bytes formats a byte count for people: 512 B, 1.5 KiB, 12.3 MiB, 2.20 GiB.
func Bytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
