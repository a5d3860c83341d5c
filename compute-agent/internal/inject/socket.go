package inject

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
)

// SocketDialer reaches a guest agent on a unix socket,
// <Dir>/<instance_id>.sock: the chardev QEMU connects the guest's
// virtio-serial port org.qemu.guest_agent.0 to, or qemu-ga itself listening
// (qemu-ga -m unix-listen) in tests.
type SocketDialer struct {
	Dir string
	// Timeout bounds connecting and each command (default 10 s).
	Timeout time.Duration
}

// Dial implements Dialer: it connects and synchronises with
// guest-sync-delimited, discarding whatever an earlier client left unread.
func (d *SocketDialer) Dial(ctx context.Context, instanceID string) (Channel, error) {
	if !attestrpc.IsUUID(instanceID) {
		return nil, fmt.Errorf("instance id %q is not a UUID", instanceID)
	}
	p := filepath.Join(d.Dir, instanceID+".sock")
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no guest agent socket %s", ErrNoInstance, p)
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var nd net.Dialer
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := nd.DialContext(dctx, "unix", p)
	if err != nil {
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrGuestAgent, p, err)
	}
	ch := &socketChannel{c: c, r: bufio.NewReader(c), timeout: timeout}
	if err := ch.sync(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return ch, nil
}

// Owner implements Dialer: <Dir>/<instance_id>.owner.
func (d *SocketDialer) Owner(_ context.Context, instanceID string) (string, error) {
	if !attestrpc.IsUUID(instanceID) {
		return "", fmt.Errorf("instance id %q is not a UUID", instanceID)
	}
	return ownerFile(d.Dir, instanceID)
}

type socketChannel struct {
	c       net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

func (s *socketChannel) deadline(ctx context.Context) {
	dl := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = s.c.SetDeadline(dl)
}

// sync sends guest-sync-delimited with a random id: the agent answers with a
// 0xFF byte, then {"return": id}. Bytes before the 0xFF and replies with
// another id are stale.
func (s *socketChannel) sync(ctx context.Context) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := int64(binary.BigEndian.Uint32(b[:]) & 0x7fffffff)
	s.deadline(ctx)
	if _, err := s.c.Write(append(command("guest-sync-delimited", map[string]any{"id": id}), '\n')); err != nil {
		return fmt.Errorf("%w: guest-sync-delimited: %w", ErrGuestAgent, err)
	}
	for range 8 {
		if _, err := s.r.ReadBytes(0xFF); err != nil {
			return fmt.Errorf("%w: guest-sync-delimited: %w", ErrGuestAgent, err)
		}
		line, err := s.r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("%w: guest-sync-delimited: %w", ErrGuestAgent, err)
		}
		raw, err := reply(bytes.TrimSpace(line))
		if err != nil {
			return err
		}
		var got int64
		if json.Unmarshal(raw, &got) == nil && got == id {
			return nil
		}
	}
	return fmt.Errorf("%w: guest-sync-delimited: no matching reply", ErrGuestAgent)
}

// Command implements Channel.
func (s *socketChannel) Command(ctx context.Context, cmd []byte) (json.RawMessage, error) {
	s.deadline(ctx)
	buf := append(bytes.Clone(cmd), '\n')
	_, err := s.c.Write(buf)
	clear(buf)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGuestAgent, err)
	}
	line, err := s.r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGuestAgent, err)
	}
	return reply(bytes.TrimSpace(line))
}

// Close implements Channel.
func (s *socketChannel) Close() error { return s.c.Close() }
