package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// maxResponse caps a TPM response (TPM2 max buffer is a few KiB).
const maxResponse = 64 << 10

// ErrTransport wraps failures talking to swtpm.
var ErrTransport = errors.New("swtpm transport error")

// swtpmConn speaks raw TPM command framing over swtpm's server (data) port:
// write a command, read one response whose size is in its header.
type swtpmConn struct {
	c       net.Conn
	timeout time.Duration
}

// DialSWTPM connects to a swtpm server port. The connection serves one
// operation; close it promptly so other clients can connect.
func DialSWTPM(ctx context.Context, addr string, timeout time.Duration) (transport.TPMCloser, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", ErrTransport, addr, err)
	}
	return &swtpmConn{c: c, timeout: timeout}, nil
}

// Send implements transport.TPM.
func (s *swtpmConn) Send(cmd []byte) ([]byte, error) {
	if err := s.c.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTransport, err)
	}
	if _, err := s.c.Write(cmd); err != nil {
		return nil, fmt.Errorf("%w: write: %w", ErrTransport, err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.c, hdr); err != nil {
		return nil, fmt.Errorf("%w: read header: %w", ErrTransport, err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("%w: response size %d", ErrTransport, size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.c, rsp[10:]); err != nil {
		return nil, fmt.Errorf("%w: read body: %w", ErrTransport, err)
	}
	return rsp, nil
}

// Close implements transport.TPMCloser.
func (s *swtpmConn) Close() error { return s.c.Close() }
