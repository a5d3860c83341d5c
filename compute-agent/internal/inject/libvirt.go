package inject

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/trustpool/trustpool/internal/attestrpc"
)

// LibvirtDialer reaches a guest agent through libvirtd's
// virDomainQemuAgentCommand (go-libvirt, pure Go, over libvirtd's unix
// socket): libvirt owns the agent channel of the domains it runs, so this
// is how anyone else talks to it. The domain is looked up by the Nova
// instance UUID, which is the libvirt domain UUID. Only running domains
// count as present.
type LibvirtDialer struct {
	// Socket is libvirtd's read-write socket (default
	// /var/run/libvirt/libvirt-sock).
	Socket string
	// URI is the connection URI (default qemu:///system).
	URI string
	// Timeout bounds connecting and each agent command (default 10 s).
	Timeout time.Duration
}

// DefaultLibvirtSocket is libvirtd's read-write socket.
const DefaultLibvirtSocket = "/var/run/libvirt/libvirt-sock"

// Nova's libvirt metadata namespaces, newest first.
var novaMetadataNS = []string{"http://openstack.org/xmlns/libvirt/nova/1.1", "http://openstack.org/xmlns/libvirt/nova/1.0"}

// Owner implements Dialer: the owner project in the Nova metadata of the
// domain ("" when the domain has none).
func (d *LibvirtDialer) Owner(ctx context.Context, instanceID string) (string, error) {
	l, dom, err := d.domain(instanceID)
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Disconnect() }()
	for _, ns := range novaMetadataNS {
		md, err := l.DomainGetMetadata(dom, int32(libvirt.DomainMetadataElement), libvirt.OptString{ns}, libvirt.DomainAffectLive)
		if err != nil {
			continue // no metadata in this namespace
		}
		var inst struct {
			Owner struct {
				Project struct {
					UUID string `xml:"uuid,attr"`
				} `xml:"project"`
			} `xml:"owner"`
		}
		if err := xml.Unmarshal([]byte(md), &inst); err != nil {
			return "", fmt.Errorf("%w: Nova metadata of domain %s: %w", ErrGuestAgent, instanceID, err)
		}
		return inst.Owner.Project.UUID, nil
	}
	return "", nil
}

// domain connects and looks the running domain up.
func (d *LibvirtDialer) domain(instanceID string) (*libvirt.Libvirt, libvirt.Domain, error) {
	if !attestrpc.IsUUID(instanceID) {
		return nil, libvirt.Domain{}, fmt.Errorf("instance id %q is not a UUID", instanceID)
	}
	raw, err := hex.DecodeString(strings.ReplaceAll(instanceID, "-", ""))
	if err != nil || len(raw) != libvirt.UUIDBuflen {
		return nil, libvirt.Domain{}, fmt.Errorf("instance id %q is not a UUID", instanceID)
	}
	var uuid libvirt.UUID
	copy(uuid[:], raw)
	sock, uri, timeout := d.Socket, d.URI, d.Timeout
	if sock == "" {
		sock = DefaultLibvirtSocket
	}
	if uri == "" {
		uri = string(libvirt.QEMUSystem)
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	l := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(sock), dialers.WithLocalTimeout(timeout)))
	if err := l.ConnectToURI(libvirt.ConnectURI(uri)); err != nil {
		return nil, libvirt.Domain{}, fmt.Errorf("%w: connect to libvirt %s: %w", ErrGuestAgent, uri, err)
	}
	dom, err := l.DomainLookupByUUID(uuid)
	if err != nil {
		_ = l.Disconnect()
		if libvirt.IsNotFound(err) {
			return nil, libvirt.Domain{}, fmt.Errorf("%w: no libvirt domain %s", ErrNoInstance, instanceID)
		}
		return nil, libvirt.Domain{}, fmt.Errorf("%w: look up domain %s: %w", ErrGuestAgent, instanceID, err)
	}
	state, _, err := l.DomainGetState(dom, 0)
	if err != nil {
		_ = l.Disconnect()
		return nil, libvirt.Domain{}, fmt.Errorf("%w: state of domain %s: %w", ErrGuestAgent, instanceID, err)
	}
	if libvirt.DomainState(state) != libvirt.DomainRunning {
		_ = l.Disconnect()
		return nil, libvirt.Domain{}, fmt.Errorf("%w: domain %s is not running", ErrNoInstance, instanceID)
	}
	return l, dom, nil
}

// Dial implements Dialer.
func (d *LibvirtDialer) Dial(ctx context.Context, instanceID string) (Channel, error) {
	l, dom, err := d.domain(instanceID)
	if err != nil {
		return nil, err
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &libvirtChannel{l: l, dom: dom, timeout: timeout}, nil
}

type libvirtChannel struct {
	l       *libvirt.Libvirt
	dom     libvirt.Domain
	timeout time.Duration
}

// Command implements Channel. libvirt synchronises with the agent itself
// and returns the reply object.
func (c *libvirtChannel) Command(ctx context.Context, cmd []byte) (json.RawMessage, error) {
	timeout := c.timeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	secs := max(int32(timeout/time.Second), 1)
	out, err := c.l.QEMUDomainAgentCommand(c.dom, string(cmd), secs, 0)
	if err != nil {
		var le libvirt.Error
		if errors.As(err, &le) {
			return nil, fmt.Errorf("%w: libvirt error %d: %s", ErrGuestAgent, le.Code, le.Message)
		}
		return nil, fmt.Errorf("%w: %w", ErrGuestAgent, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty reply", ErrGuestAgent)
	}
	return reply([]byte(out[0]))
}

// Close implements Channel.
func (c *libvirtChannel) Close() error { return c.l.Disconnect() }
