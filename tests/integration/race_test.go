//go:build race

package integration

// raceEnabled: this test binary runs with the race detector, so the
// binaries it builds (the trustpool CLI) get it too.
const raceEnabled = true
