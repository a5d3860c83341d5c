package agent

import (
	"errors"
	"log/slog"
	"testing"
)

// TestRebooted: instances of kept blobs present at start count as started
// only when the host booted since the agent's last start (or that is
// unknown).
func TestRebooted(t *testing.T) {
	id, idErr := "boot-1", error(nil)
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	a.cfg.Agent.StateDir = t.TempDir()
	a.cfg.BootID = func() (string, error) { return id, idErr }
	for _, step := range []struct {
		name string
		edit func()
		want bool
	}{
		{"first start (no boot id recorded)", func() {}, true},
		{"agent restarted, same boot", func() {}, false},
		{"again", func() {}, false},
		{"host rebooted", func() { id = "boot-2" }, true},
		{"agent restarted after the reboot", func() {}, false},
		{"boot id unreadable", func() { idErr = errors.New("no /proc") }, true},
	} {
		step.edit()
		if got := a.rebooted(); got != step.want {
			t.Errorf("%s: rebooted = %v, want %v", step.name, got, step.want)
		}
	}
}
