package inject

import (
	"context"
	"fmt"
)

// DialAfterStale connects like d.Dial, but first sends stale and does not
// read its reply: what a virtio-serial channel holds when an earlier client
// left without reading. The handshake must discard that reply.
func DialAfterStale(ctx context.Context, d *SocketDialer, instanceID string, stale []byte) (Channel, error) {
	c, err := d.connect(ctx, instanceID)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(stale); err != nil {
		c.Close()
		return nil, fmt.Errorf("write the stale command: %w", err)
	}
	return d.handshake(ctx, c)
}
