// Package sdnotify sends systemd service notifications (sd_notify(3)):
// one datagram with newline-separated VAR=value assignments to the unix
// socket named by $NOTIFY_SOCKET. It is what Type=notify units wait for.
//
// It checks nothing about the receiver; outside systemd (NOTIFY_SOCKET
// unset) it does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"strings"
)

// States a service commonly sends.
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Reloading = "RELOADING=1"
	Watchdog  = "WATCHDOG=1"
)

// Status formats a STATUS= line (the free-form text systemctl status shows).
func Status(s string) string { return "STATUS=" + strings.ReplaceAll(s, "\n", " ") }

// Notify sends the states as one datagram to socket, the value of
// $NOTIFY_SOCKET (a path, or "@name" for an abstract socket). It reports
// whether anything was sent: an empty socket means "not under systemd" and
// is not an error.
func Notify(socket string, states ...string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	name := socket
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("sd_notify: connect %s: %w", socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(states, "\n"))); err != nil {
		return false, fmt.Errorf("sd_notify: send: %w", err)
	}
	return true, nil
}
