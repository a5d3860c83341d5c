package localapi

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// ErrNoSuchGroup means the configured socket group does not exist.
var ErrNoSuchGroup = errors.New("socket group does not exist")

// ErrInUse means another process is already serving on the socket path.
var ErrInUse = errors.New("socket already in use")

// SocketOptions says where and with which permissions to listen.
type SocketOptions struct {
	// Path of the socket. Its directory is created (0755) if missing.
	Path string
	// Group owns the socket ("" keeps the process's group). It must exist.
	Group string
	// Mode is the socket's permission bits (connecting needs write).
	Mode fs.FileMode
}

// Listen creates the unix socket with its final group and mode before
// anyone can connect: it binds a temporary name in the same directory,
// sets the group and mode, then renames it into place. A stale socket left
// by a dead process is replaced; a live one (something accepts
// connections) is an error wrapping ErrInUse, and a path that is not a
// socket is never removed.
func Listen(o SocketOptions) (net.Listener, error) {
	gid := -1
	if o.Group != "" {
		g, err := user.LookupGroup(o.Group)
		if err != nil {
			return nil, fmt.Errorf("%w: %q (create it, or set [filter_shim] socket_group to the group nova-scheduler runs as, or to \"\" to keep this process's group): %w", ErrNoSuchGroup, o.Group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("group %q has a non-numeric gid %q", o.Group, g.Gid)
		}
	}
	// 0755: nova-scheduler, another user, must reach the socket inside.
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o755); err != nil { //nolint:gosec // G301: see above
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := removeStale(o.Path); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", o.Path, os.Getpid())
	_ = os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", o.Path, err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		_ = l.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if gid >= 0 {
		if err := os.Lchown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("set group %q on socket %s: %w", o.Group, o.Path, err))
		}
	}
	if err := os.Chmod(tmp, o.Mode.Perm()); err != nil {
		return fail(fmt.Errorf("set mode %04o on socket %s: %w", o.Mode.Perm(), o.Path, err))
	}
	if err := os.Rename(tmp, o.Path); err != nil {
		return fail(fmt.Errorf("move socket into place at %s: %w", o.Path, err))
	}
	fi, err := os.Lstat(o.Path)
	if err != nil {
		return fail(fmt.Errorf("stat socket %s: %w", o.Path, err))
	}
	return &listener{UnixListener: l, path: o.Path, fi: fi}, nil
}

// removeStale removes a socket at path that nobody serves.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("%w: another process serves %s", ErrInUse, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// listener removes its socket file on Close, unless it was replaced.
type listener struct {
	*net.UnixListener
	path string
	fi   fs.FileInfo
	once sync.Once
}

func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if cur, e := os.Lstat(l.path); e == nil && os.SameFile(cur, l.fi) {
			_ = os.Remove(l.path)
		}
	})
	return err
}
