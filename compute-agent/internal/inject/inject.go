// Package inject puts a trusted launch's secret and receipt into an
// instance running on this host, and answers whether an instance runs here.
//
// Two injectors:
//
//   - QGA ("qemu-guest-agent", production): the QEMU guest agent inside the
//     instance writes the files, reached through libvirt's agent-command
//     API (LibvirtDialer; the Nova instance UUID is the libvirt domain
//     UUID; image property hw_qemu_guest_agent=yes) or a guest agent
//     socket (SocketDialer, for tests against the real qemu-ga). The
//     secret goes to <guest_dir>/launch-secret (mode 0400) and the receipt
//     to <guest_dir>/launch-receipt.json (0644), guest_dir being
//     /run/trustpool by default. qemu-ga creates files world-writable
//     whatever the umask, so each file is first created empty with mode
//     0600 by a shell under umask 077, then written, then given its mode.
//   - Directory ("directory", tests, Nova's fake virt driver, sidecars):
//     <dir>/<instance_id>/ is the instance (whoever runs it creates the
//     directory); the files are written there, the secret 0400.
//
// Owner is who the hypervisor says owns an instance: the project uuid in
// the Nova metadata libvirt keeps with the domain
// (http://openstack.org/xmlns/libvirt/nova/1.1, owner/project), or, for
// the socket and directory injectors, the file <dir>/<instance_id>.owner
// the hypervisor stand-in writes. It lets the service check, on the host
// and not on Nova's word, that the instance belongs to the launch's
// project.
//
// The secret is never logged; buffers holding it are overwritten after
// use, as far as the package holds them.
package inject

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/trustpool/trustpool/internal/launch"
)

// Names of the files an instance receives.
const (
	SecretFile  = launch.SecretFile
	ReceiptFile = launch.ReceiptFile
)

// ErrNoInstance means the instance does not run on this host.
var ErrNoInstance = errors.New("instance not on this host")

// File is one file to put into an instance.
type File struct {
	// Name is a base name (SecretFile, ReceiptFile).
	Name string
	Data []byte
	Mode fs.FileMode
}

// Injector writes files into instances.
type Injector interface {
	// Name is "qemu-guest-agent" or "directory".
	Name() string
	// Present reports whether the instance runs on this host.
	Present(ctx context.Context, instanceID string) (bool, error)
	// Owner returns the project the hypervisor records as the instance's
	// owner ("" when it cannot tell).
	Owner(ctx context.Context, instanceID string) (string, error)
	// Inject writes files into the instance (ErrNoInstance when it does
	// not run here).
	Inject(ctx context.Context, instanceID string, files []File) error
}

// ownerFile reads <dir>/<instance_id>.owner ("" when absent).
func ownerFile(dir, instanceID string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, instanceID+".owner"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
