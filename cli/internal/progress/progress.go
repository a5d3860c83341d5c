// Package progress shows what a waiting command is waiting for: one line,
// rewritten in place, on a terminal. On anything else (a pipe, a log file)
// it writes nothing, so scripts see only the command's result.
package progress

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Line is a progress line. The zero value and a Line on a non-terminal do
// nothing.
type Line struct {
	w     io.Writer
	start time.Time
	now   func() time.Time

	mu    sync.Mutex
	shown bool
}

// New returns a progress line on w when w is a terminal (isTerminal).
func New(w io.Writer, isTerminal bool, now func() time.Time) *Line {
	if !isTerminal {
		return &Line{}
	}
	if now == nil {
		now = time.Now
	}
	return &Line{w: w, start: now(), now: now}
}

// Update replaces the line with msg and the time since New.
func (l *Line) Update(msg string) {
	if l == nil || l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	secs := int(l.now().Sub(l.start).Seconds())
	// \r returns to the start of the line, \x1b[K erases what is left of
	// a longer previous message.
	fmt.Fprintf(l.w, "\r\x1b[K%s (%ds)", msg, secs)
	l.shown = true
}

// Done erases the line, so that the result starts on a clean line.
func (l *Line) Done() {
	if l == nil || l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shown {
		fmt.Fprint(l.w, "\r\x1b[K")
		l.shown = false
	}
}
