package servicetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbitBin holds the upstream RabbitMQ scripts. The /usr/sbin wrappers su
// to the rabbitmq user and cd to /var/lib/rabbitmq; a private node runs as
// the test's user with its own HOME.
const rabbitBin = "/usr/lib/rabbitmq/bin"

// Rabbit is a RabbitMQ vhost on a private node listening on 127.0.0.1.
type Rabbit struct {
	// URL is the oslo.messaging transport_url for this vhost,
	// rabbit://guest:guest@127.0.0.1:PORT/VHOST.
	URL string
	// AMQPURL is the same vhost as an amqp091-go URL,
	// amqp://guest:guest@127.0.0.1:PORT/VHOST.
	AMQPURL string
	// AMQPPort is the node's AMQP 0-9-1 listener on 127.0.0.1.
	AMQPPort int
	// VHost is the virtual host, "/" on a private node.
	VHost string
	// NodeName is the Erlang node name, e.g. tp12345@localhost.
	NodeName string
	// MgmtURL is the management HTTP API (guest/guest) on the shared node,
	// e.g. http://127.0.0.1:PORT/api; empty on a private node.
	MgmtURL string
	// Dir holds the node's configuration, data and logs (log/).
	Dir string

	node   *rabbitNode
	shared bool
}

type rabbitNode struct {
	dir                          string
	amqpPort, mgmtPort, distPort int
	nodeName                     string
	mgmt                         bool
	env                          []string
	d                            *daemon
}

var sharedRabbit lazy[*rabbitNode]

// vhostSeq numbers the vhosts of this process.
var vhostSeq atomic.Int64

// RabbitMQ returns a fresh vhost, with full permissions for guest, on the
// RabbitMQ node shared by the test process. The node starts on first use
// (about 10 s) and is stopped by [Main]; the vhost is deleted when the test
// ends. Use [NewRabbitMQ] for tests that stop or break the broker.
func RabbitMQ(t testing.TB) *Rabbit {
	t.Helper()
	integration(t, "RabbitMQ")
	node, err := sharedRabbit.get(func() (*rabbitNode, error) {
		dir, err := sharedDir("rabbitmq")
		if err != nil {
			return nil, err
		}
		start := time.Now()
		n, err := startRabbit(dir, true)
		if err != nil {
			return nil, err
		}
		t.Logf("servicetest: shared RabbitMQ %s on 127.0.0.1:%d started in %s", n.nodeName, n.amqpPort, time.Since(start).Round(time.Millisecond))
		atExit(func() error { return n.d.stop(60 * time.Second) })
		return n, nil
	})
	if err != nil {
		t.Fatalf("servicetest: shared RabbitMQ: %v", err)
	}
	vhost := fmt.Sprintf("t%d-%s", vhostSeq.Add(1), randHex(4))
	if err := node.mgmtCall(t.Context(), http.MethodPut, "/vhosts/"+url.PathEscape(vhost), ""); err != nil {
		t.Fatalf("servicetest: create vhost: %v", err)
	}
	perms := `{"configure":".*","write":".*","read":".*"}`
	if err := node.mgmtCall(t.Context(), http.MethodPut, "/permissions/"+url.PathEscape(vhost)+"/guest", perms); err != nil {
		t.Fatalf("servicetest: set permissions: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := node.mgmtCall(ctx, http.MethodDelete, "/vhosts/"+url.PathEscape(vhost), ""); err != nil {
			t.Logf("servicetest: delete vhost %s: %v", vhost, err)
		}
	})
	return node.rabbit(vhost, true)
}

// NewRabbitMQ starts a RabbitMQ node private to the test (about 8 s), for
// tests that stop, restart or break the broker. It uses the default vhost
// "/" and is stopped when the test ends.
func NewRabbitMQ(t testing.TB) *Rabbit {
	t.Helper()
	integration(t, "RabbitMQ")
	start := time.Now()
	n, err := startRabbit(t.TempDir(), false)
	if err != nil {
		t.Fatalf("servicetest: private RabbitMQ: %v", err)
	}
	t.Logf("servicetest: private RabbitMQ %s on 127.0.0.1:%d started in %s", n.nodeName, n.amqpPort, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := n.d.stop(60 * time.Second); err != nil {
			t.Errorf("servicetest: %v", err)
		}
	})
	return n.rabbit("/", false)
}

func (n *rabbitNode) rabbit(vhost string, shared bool) *Rabbit {
	path := "/" + url.PathEscape(vhost)
	if vhost == "/" {
		path = "/"
	}
	r := &Rabbit{
		URL:      fmt.Sprintf("rabbit://guest:guest@127.0.0.1:%d%s", n.amqpPort, path),
		AMQPURL:  fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d%s", n.amqpPort, path),
		AMQPPort: n.amqpPort,
		VHost:    vhost,
		NodeName: n.nodeName,
		Dir:      n.dir,
		node:     n,
		shared:   shared,
	}
	if n.mgmt {
		r.MgmtURL = fmt.Sprintf("http://127.0.0.1:%d/api", n.mgmtPort)
	}
	return r
}

// startRabbit starts a node in dir, retrying with new ports when another
// process took one of them in between.
func startRabbit(dir string, mgmt bool) (*rabbitNode, error) {
	return startRabbitCookie(dir, mgmt, randAlpha(24))
}

// startRabbitCookie is startRabbit with a given Erlang cookie (nodes of a
// cluster share one).
func startRabbitCookie(dir string, mgmt bool, cookie string) (*rabbitNode, error) {
	if err := need(filepath.Join(rabbitBin, "rabbitmq-server"), "rabbitmq-server"); err != nil {
		return nil, err
	}
	var err error
	for attempt := range 3 {
		var n *rabbitNode
		n, err = tryStartRabbit(filepath.Join(dir, "node"+strconv.Itoa(attempt)), mgmt, cookie)
		if err == nil {
			return n, nil
		}
	}
	return nil, err
}

func tryStartRabbit(dir string, mgmt bool, cookie string) (*rabbitNode, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	n := &rabbitNode{dir: dir, amqpPort: ports[0], mgmtPort: ports[1], distPort: ports[2], mgmt: mgmt}
	n.nodeName = fmt.Sprintf("tp%d@localhost", n.amqpPort)
	home := filepath.Join(dir, "home")
	for _, d := range []string{home, filepath.Join(dir, "mnesia"), filepath.Join(dir, "log")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// The CLI tools and the node must share $HOME/.erlang.cookie.
	if err := os.WriteFile(filepath.Join(home, ".erlang.cookie"), []byte(cookie), 0o400); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users.guest = true\nlog.console = false\nlog.file.level = info\n", n.amqpPort)
	plugins := "[]."
	if mgmt {
		conf += fmt.Sprintf("management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %d\n", n.mgmtPort)
		plugins = "[rabbitmq_management]."
	}
	files := map[string]string{
		"rabbitmq.conf":     conf,
		"enabled_plugins":   plugins + "\n",
		"rabbitmq-env.conf": "# empty: keeps /etc/rabbitmq/rabbitmq-env.conf out\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	n.env = []string{
		"HOME=" + home,
		"RABBITMQ_NODENAME=" + n.nodeName,
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(n.distPort),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq"), // means rabbitmq.conf
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(dir, "rabbitmq-env.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "rabbit.pid"),
		// The distribution port listens on 0.0.0.0 unless told otherwise.
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"PATH=" + rabbitBin + ":" + os.Getenv("PATH"),
	}
	// Foreground: the rabbitmq-server shell stays our child and stops the
	// Erlang VM cleanly on SIGTERM.
	n.d, err = startDaemon("rabbitmq-server "+n.nodeName, filepath.Join(dir, "log", "console.log"), dir, n.env,
		filepath.Join(rabbitBin, "rabbitmq-server"))
	if err != nil {
		return nil, err
	}
	err = waitReady(n.d, 90*time.Second, n.ready)
	if err != nil {
		_ = n.d.stop(30 * time.Second)
		return nil, err
	}
	return n, nil
}

// ready is true once guest can open an AMQP connection, and, with the
// management plugin, once the HTTP API answers.
func (n *rabbitNode) ready(ctx context.Context) error {
	conn, err := amqp.DialConfig(fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.amqpPort), amqp.Config{
		Dial: amqp.DefaultDial(2 * time.Second),
	})
	if err != nil {
		return err
	}
	_ = conn.Close()
	if n.mgmt {
		return n.mgmtCall(ctx, http.MethodGet, "/overview", "")
	}
	return nil
}

func (n *rabbitNode) mgmtCall(ctx context.Context, method, path, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, fmt.Sprintf("http://127.0.0.1:%d/api%s", n.mgmtPort, path), strings.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth("guest", "guest")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("rabbitmq management %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("rabbitmq management %s %s: %s: %s", method, path, resp.Status, msg)
	}
	return nil
}

func (n *rabbitNode) ctl(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{filepath.Join(rabbitBin, "rabbitmqctl"), "-n", n.nodeName}, args...)
	return run(ctx, n.env, argv...)
}

// Ctl runs rabbitmqctl against the node with args, for example
// Ctl(t, "list_queues", "-p", r.VHost, "name", "durable"), fails the test if
// it fails, and returns its standard output. Each call takes about a second.
func (r *Rabbit) Ctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := r.node.ctl(ctx, args...)
	if err != nil {
		t.Fatalf("servicetest: rabbitmqctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// CtlEnv is the environment in which `rabbitmqctl`, first on its PATH,
// manages this node: for running operator scripts against it.
func (r *Rabbit) CtlEnv() []string { return slices.Clone(r.node.env) }

// StopApp stops the RabbitMQ application on the node (rabbitmqctl
// stop_app): every connection is closed and the port stops listening, while
// the Erlang node keeps running. Only for nodes from [NewRabbitMQ]: stopping
// the shared node would break the process's other tests.
func (r *Rabbit) StopApp(t testing.TB) {
	t.Helper()
	r.privateOnly(t, "StopApp")
	r.Ctl(t, "stop_app")
}

// StartApp starts the RabbitMQ application again (rabbitmqctl start_app)
// and returns once it accepts AMQP connections.
func (r *Rabbit) StartApp(t testing.TB) {
	t.Helper()
	r.privateOnly(t, "StartApp")
	r.Ctl(t, "start_app")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		err := r.node.ready(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("servicetest: RabbitMQ not accepting connections after start_app: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *Rabbit) privateOnly(t testing.TB, what string) {
	t.Helper()
	if r.shared {
		t.Fatalf("servicetest: %s on the shared RabbitMQ node; use NewRabbitMQ for disruptive tests", what)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randAlpha(n int) string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
