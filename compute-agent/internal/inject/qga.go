package inject

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/trustpool/trustpool/internal/launch"
)

// QGA protocol (qemu/qga/qapi-schema.json): one JSON command
// {"execute": name, "arguments": {...}} per line; the agent answers
// {"return": value} or {"error": {"class": ..., "desc": ...}}.

// ErrGuestAgent wraps the guest agent's own errors and protocol failures.
var ErrGuestAgent = errors.New("guest agent error")

// Channel runs QGA commands in one instance's guest agent.
type Channel interface {
	// Command sends cmd (a QGA command object) and returns the reply's
	// "return" value, or an error wrapping ErrGuestAgent.
	Command(ctx context.Context, cmd []byte) (json.RawMessage, error)
	Close() error
}

// Dialer opens a Channel to an instance's guest agent; a Dial error wraps
// ErrNoInstance when the instance does not run on this host. Owner is the
// Injector method.
type Dialer interface {
	Dial(ctx context.Context, instanceID string) (Channel, error)
	Owner(ctx context.Context, instanceID string) (string, error)
}

// QGA is the qemu-guest-agent injector.
type QGA struct {
	Dialer Dialer
	// GuestDir is where the files go in the guest (default /run/trustpool).
	GuestDir string
	// ExecTimeout bounds each command run in the guest (default 10 s).
	ExecTimeout time.Duration
}

// DefaultGuestDir is where the secret and receipt go in a guest.
const DefaultGuestDir = launch.DefaultGuestDir

// Name implements Injector.
func (q *QGA) Name() string { return "qemu-guest-agent" }

func (q *QGA) guestDir() string {
	if q.GuestDir == "" {
		return DefaultGuestDir
	}
	return q.GuestDir
}

// Present implements Injector: the instance runs here and its guest agent
// answers guest-ping.
func (q *QGA) Present(ctx context.Context, instanceID string) (bool, error) {
	ch, err := q.Dialer.Dial(ctx, instanceID)
	if errors.Is(err, ErrNoInstance) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer ch.Close()
	if _, err := ch.Command(ctx, command("guest-ping", nil)); err != nil {
		return false, err
	}
	return true, nil
}

// Owner implements Injector.
func (q *QGA) Owner(ctx context.Context, instanceID string) (string, error) {
	return q.Dialer.Owner(ctx, instanceID)
}

// Inject implements Injector.
func (q *QGA) Inject(ctx context.Context, instanceID string, files []File) error {
	ch, err := q.Dialer.Dial(ctx, instanceID)
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, f := range files {
		if err := q.writeFile(ctx, ch, f); err != nil {
			return fmt.Errorf("write %s in the guest: %w", f.Name, err)
		}
	}
	return nil
}

func command(name string, args any) []byte {
	m := map[string]any{"execute": name}
	if args != nil {
		m["arguments"] = args
	}
	b, _ := json.Marshal(m)
	return b
}

// writeFile creates the file empty and private, writes it, then sets its
// mode; a partly written file is removed.
func (q *QGA) writeFile(ctx context.Context, ch Channel, f File) error {
	if f.Name != path.Base(f.Name) || strings.ContainsAny(f.Name, "/\x00") {
		return fmt.Errorf("file name %q is not a base name", f.Name)
	}
	dir := q.guestDir()
	p := path.Join(dir, f.Name)
	// umask 077 covers the directory and the empty file; qemu-ga's
	// guest-file-open would create a 0666 file.
	if err := q.exec(ctx, ch, "/bin/sh", "-c", `umask 077 && mkdir -p -- "$1" && rm -f -- "$2" && : > "$2"`, "sh", dir, p); err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			_ = q.exec(context.WithoutCancel(ctx), ch, "/bin/rm", "-f", "--", p)
		}
	}()
	raw, err := ch.Command(ctx, command("guest-file-open", map[string]any{"path": p, "mode": "w"}))
	if err != nil {
		return err
	}
	var h int64
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("%w: guest-file-open returned %s", ErrGuestAgent, raw)
	}
	closed := false
	defer func() {
		if !closed {
			_, _ = ch.Command(context.WithoutCancel(ctx), command("guest-file-close", map[string]any{"handle": h}))
		}
	}()
	const chunk = 32 << 10
	for off := 0; off < len(f.Data); off += chunk {
		part := f.Data[off:min(off+chunk, len(f.Data))]
		b64 := []byte(base64.StdEncoding.EncodeToString(part))
		cmd := command("guest-file-write", map[string]any{"handle": h, "buf-b64": string(b64)})
		raw, err := ch.Command(ctx, cmd)
		clear(b64)
		clear(cmd)
		if err != nil {
			return err
		}
		var w struct {
			Count int `json:"count"`
		}
		if err := json.Unmarshal(raw, &w); err != nil || w.Count != len(part) {
			return fmt.Errorf("%w: guest-file-write wrote %d of %d bytes", ErrGuestAgent, w.Count, len(part))
		}
	}
	if _, err := ch.Command(ctx, command("guest-file-flush", map[string]any{"handle": h})); err != nil {
		return err
	}
	closed = true
	if _, err := ch.Command(ctx, command("guest-file-close", map[string]any{"handle": h})); err != nil {
		return err
	}
	if f.Mode.Perm() != 0o600 {
		if err := q.exec(ctx, ch, "/bin/chmod", fmt.Sprintf("%04o", f.Mode.Perm()), "--", p); err != nil {
			return err
		}
	}
	ok = true
	return nil
}

// exec runs a program in the guest and waits for it to exit 0.
func (q *QGA) exec(ctx context.Context, ch Channel, prog string, args ...string) error {
	timeout := q.ExecTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := ch.Command(ctx, command("guest-exec", map[string]any{"path": prog, "arg": args, "capture-output": true}))
	if err != nil {
		return err
	}
	var started struct {
		PID int64 `json:"pid"`
	}
	if err := json.Unmarshal(raw, &started); err != nil {
		return fmt.Errorf("%w: guest-exec returned %s", ErrGuestAgent, raw)
	}
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		raw, err := ch.Command(ctx, command("guest-exec-status", map[string]any{"pid": started.PID}))
		if err != nil {
			return err
		}
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode int    `json:"exitcode"`
			Signal   int    `json:"signal"`
			Err      string `json:"err-data"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("%w: guest-exec-status returned %s", ErrGuestAgent, raw)
		}
		if st.Exited {
			if st.ExitCode != 0 || st.Signal != 0 {
				msg, _ := base64.StdEncoding.DecodeString(st.Err)
				return fmt.Errorf("%w: %s in the guest exited %d: %s", ErrGuestAgent, path.Base(prog), st.ExitCode, strings.TrimSpace(string(msg)))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s in the guest: %w", ErrGuestAgent, path.Base(prog), ctx.Err())
		case <-time.After(delay):
		}
	}
}

// reply decodes one QGA reply line.
func reply(line []byte) (json.RawMessage, error) {
	var r struct {
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		} `json:"error"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("%w: undecodable reply", ErrGuestAgent)
	}
	if r.Error != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrGuestAgent, r.Error.Class, r.Error.Desc)
	}
	if r.Return == nil {
		return nil, fmt.Errorf("%w: reply has neither return nor error", ErrGuestAgent)
	}
	return r.Return, nil
}
