// Package interop proves that internal/oslo interoperates with the real
// Python oslo.messaging (Debian Zed, run with /usr/bin/python3) over a real
// RabbitMQ: Python clients against Go servers and the reverse, notifications
// both ways, duplicate detection, and recovery from a broker restart.
//
// The tests start their brokers through internal/servicetest and the Python
// side from the scripts in py/. They are skipped only with `go test -short`;
// a missing broker or Python package is a failure.
//
// The Go side serves the method set of package peer (echo, fail, sleep,
// record, recorded), the same as py/server.py, so both directions run the
// same matrix and a Go and a Python server must answer it identically.
package interop
