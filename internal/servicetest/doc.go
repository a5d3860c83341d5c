// Package servicetest starts the real services that integration tests need —
// RabbitMQ, Keystone, swtpm and MariaDB, all from Debian packages — as
// private instances on loopback, and stops them again.
//
// Every instance has its own ports (random free ports in 10000–32000, never
// the ephemeral range), its own data directory under a temporary directory,
// and, for RabbitMQ, its own node name and Erlang cookie. So test packages can
// run in parallel, and nothing here ever touches a broker, database or TPM
// that someone else runs on the machine.
//
// Two lifetimes:
//
//   - shared per test process, started lazily by the first test that asks:
//     [RabbitMQ] (a fresh vhost per call), [Keystone], [MariaDB] (a fresh
//     database per call). They are stopped by [Main], which every package that
//     uses them must call from TestMain:
//
//     func TestMain(m *testing.M) { servicetest.Main(m) }
//
//   - private to one test, stopped by t.Cleanup: [NewRabbitMQ] (for tests
//     that stop or break the broker) and [SWTPM].
//
// Daemons are direct children of the test process and receive SIGTERM when
// it dies, even from a timeout panic or SIGKILL, so nothing outlives a test
// run.
//
// With go test -short every function here skips the calling test. Otherwise
// a missing component (package not installed, daemon that will not start)
// fails the test: run make deps to install everything.
package servicetest
