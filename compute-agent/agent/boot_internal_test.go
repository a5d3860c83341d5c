package agent

import (
	"errors"
	"log/slog"
	"testing"
)

// TestRebooted: instances of kept blobs present at start count as started
// only when the host booted since the boot id was last recorded (or that
// is unknown), and the boot id is recorded only when the watcher settled:
// an agent restarted after a reboot but before its first full check still
// sees the reboot.
func TestRebooted(t *testing.T) {
	id, idErr := "boot-1", error(nil)
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	a.cfg.Agent.StateDir = t.TempDir()
	a.cfg.BootID = func() (string, error) { return id, idErr }
	for _, step := range []struct {
		name    string
		edit    func()
		want    bool
		settled bool
	}{
		{"first start (no boot id recorded)", func() {}, true, true},
		{"agent restarted, same boot", func() {}, false, true},
		{"host rebooted; the agent stops before its first full check", func() { id = "boot-2" }, true, false},
		{"agent restarted, the reboot not settled yet", func() {}, true, true},
		{"agent restarted after settling", func() {}, false, true},
		{"boot id unreadable", func() { idErr = errors.New("no /proc") }, true, true},
	} {
		step.edit()
		got, record := a.rebooted()
		if got != step.want {
			t.Errorf("%s: rebooted = %v, want %v", step.name, got, step.want)
		}
		if step.settled {
			record()
		}
	}
}
