// Package sdnotify sends systemd service notifications (sd_notify(3)) to
// $NOTIFY_SOCKET: READY=1 once the service serves, STOPPING=1 on shutdown.
// Outside systemd (no NOTIFY_SOCKET) it does nothing. It does not log.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Notification states.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Notify sends state to the socket named by $NOTIFY_SOCKET. It reports
// whether a message was sent; with no socket configured it returns false, nil.
func Notify(state string) (bool, error) {
	return NotifySocket(os.Getenv("NOTIFY_SOCKET"), state)
}

// NotifySocket sends state to socket (a path, or "@name" for the abstract
// namespace).
func NotifySocket(socket, state string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	addr := &net.UnixAddr{Name: socket, Net: "unixgram"}
	if socket[0] == '@' {
		addr.Name = "\x00" + socket[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}
