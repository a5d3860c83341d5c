package servicetest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// PythonPath is the interpreter that has the Debian python3-* packages. The
// python3 on PATH may be another one.
const PythonPath = "/usr/bin/python3"

var (
	mainMu     sync.Mutex
	mainCalled bool
	rootDir    string         // temporary directory holding the shared services' data
	stoppers   []func() error // shared services to stop in Main, in start order
)

// Main runs the tests of a package and then stops the shared services they
// started ([RabbitMQ], [Keystone], [MariaDB]) and removes their data. Call it
// from TestMain:
//
//	func TestMain(m *testing.M) { servicetest.Main(m) }
func Main(m *testing.M) {
	mainMu.Lock()
	mainCalled = true
	mainMu.Unlock()

	code := m.Run()

	mainMu.Lock()
	defer mainMu.Unlock()
	for i := len(stoppers) - 1; i >= 0; i-- {
		if err := stoppers[i](); err != nil {
			fmt.Fprintf(os.Stderr, "servicetest: %v\n", err)
		}
	}
	stoppers = nil
	if rootDir != "" {
		_ = os.RemoveAll(rootDir)
		rootDir = ""
	}
	os.Exit(code)
}

// sharedDir returns a fresh directory for a shared service under the
// process's root directory. It fails when Main is not in use, since nothing
// would stop the service.
func sharedDir(name string) (string, error) {
	mainMu.Lock()
	defer mainMu.Unlock()
	if !mainCalled {
		return "", fmt.Errorf("shared %s needs servicetest.Main: add `func TestMain(m *testing.M) { servicetest.Main(m) }` to the package", name)
	}
	if rootDir == "" {
		d, err := os.MkdirTemp("", "trustpool-servicetest-")
		if err != nil {
			return "", err
		}
		rootDir = d
	}
	return os.MkdirTemp(rootDir, name+"-")
}

// atExit registers a shared service's stop function for Main.
func atExit(stop func() error) {
	mainMu.Lock()
	defer mainMu.Unlock()
	stoppers = append(stoppers, stop)
}

// integration skips the test under -short. Every exported constructor calls it.
func integration(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("integration test needs %s; skipped with -short", what)
	}
}

// lazy starts a shared service once per process. A failed start is
// remembered, so later tests fail at once instead of waiting again.
type lazy[T any] struct {
	mu  sync.Mutex
	v   T
	err error
	ok  bool
}

func (l *lazy[T]) get(start func() (T, error)) (T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ok {
		l.v, l.err = start()
		l.ok = true
	}
	return l.v, l.err
}

var pythonChecked lazy[string]

// Python returns the path of the Debian Python interpreter, /usr/bin/python3,
// after checking once per process that oslo.messaging imports.
func Python(t testing.TB) string {
	t.Helper()
	integration(t, "/usr/bin/python3 with oslo.messaging")
	p, err := pythonChecked.get(func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := run(ctx, nil, PythonPath, "-c", "import oslo_messaging, oslo_config"); err != nil {
			return "", fmt.Errorf("python3-oslo.messaging not importable (run make deps): %w", err)
		}
		return PythonPath, nil
	})
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	return p
}
