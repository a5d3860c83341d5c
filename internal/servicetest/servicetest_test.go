package servicetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestMain(m *testing.M) { Main(m) }

func dialAMQP(t *testing.T, r *Rabbit) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(r.AMQPURL)
	if err != nil {
		t.Fatalf("dial %s: %v", r.AMQPURL, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestRabbitMQSharedVHosts(t *testing.T) {
	t.Parallel()
	a, b := RabbitMQ(t), RabbitMQ(t)
	if a.AMQPPort != b.AMQPPort || a.NodeName != b.NodeName {
		t.Errorf("two calls got different nodes: %s:%d and %s:%d", a.NodeName, a.AMQPPort, b.NodeName, b.AMQPPort)
	}
	if a.VHost == b.VHost {
		t.Fatalf("two calls got the same vhost %q", a.VHost)
	}
	if a.AMQPPort < minPort || a.AMQPPort > maxPort {
		t.Errorf("AMQP port %d outside %d-%d", a.AMQPPort, minPort, maxPort)
	}
	if want := "rabbit://guest:guest@127.0.0.1:"; !strings.HasPrefix(a.URL, want) || !strings.HasSuffix(a.URL, "/"+a.VHost) {
		t.Errorf("URL = %q", a.URL)
	}
	// A queue declared in one vhost is invisible in the other.
	ch, err := dialAMQP(t, a).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("servicetest-q", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	chB, err := dialAMQP(t, b).Channel()
	if err != nil {
		t.Fatal(err)
	}
	_, err = chB.QueueDeclarePassive("servicetest-q", false, true, false, false, nil)
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp.NotFound {
		t.Errorf("passive declare in the other vhost: err = %v, want NOT_FOUND", err)
	}
	if out := a.Ctl(t, "list_queues", "-p", a.VHost, "--no-table-headers", "--quiet", "name"); !strings.Contains(out, "servicetest-q") {
		t.Errorf("rabbitmqctl list_queues = %q, want servicetest-q", out)
	}
	// The AMQP port listens on loopback only.
	if ip := nonLoopbackAddr(); ip != "" {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, itoa(a.AMQPPort)), time.Second); err == nil {
			_ = c.Close()
			t.Errorf("AMQP port reachable on %s", ip)
		}
	}
}

func TestRabbitMQSharedRefusesStopApp(t *testing.T) {
	t.Parallel()
	r := RabbitMQ(t)
	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() { // t.Fatalf ends the goroutine with runtime.Goexit
		defer close(done)
		r.StopApp(ft)
	}()
	<-done
	if !ft.failed {
		t.Error("StopApp on the shared node did not fail the test")
	}
}

func TestNewRabbitMQStopStartApp(t *testing.T) {
	t.Parallel()
	r := NewRabbitMQ(t)
	if r.VHost != "/" || !strings.HasSuffix(r.URL, ":"+itoa(r.AMQPPort)+"/") {
		t.Errorf("private node: VHost %q URL %q", r.VHost, r.URL)
	}
	conn := dialAMQP(t, r)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	r.StopApp(t)
	select {
	case e := <-closed:
		t.Logf("connection closed by stop_app: %v", e)
	case <-time.After(30 * time.Second):
		t.Fatal("connection not closed by stop_app")
	}
	if c, err := amqp.Dial(r.AMQPURL); err == nil {
		_ = c.Close()
		t.Fatal("dial succeeded while the app was stopped")
	}
	r.StartApp(t)
	dialAMQP(t, r)
}

func TestKeystone(t *testing.T) {
	t.Parallel()
	k := Keystone(t)
	if k2 := Keystone(t); k2 != k {
		t.Error("second call started another Keystone")
	}
	if !strings.HasPrefix(k.URL, "http://127.0.0.1:") || !strings.HasSuffix(k.URL, "/v3") {
		t.Errorf("URL = %q", k.URL)
	}
	if tok := k.AdminToken(t); tok == "" {
		t.Fatal("empty admin token")
	}
	name := "svc-" + randHex(3)
	uid, pid := k.CreateUser(t, KeystoneUser{Name: name, Password: "pw", Project: "service-" + name, Roles: []string{"service", "reader"}})
	if uid == "" || pid == "" {
		t.Fatalf("CreateUser() = %q, %q", uid, pid)
	}
	if tok := k.Token(t, name, "pw", "service-"+name); tok == "" {
		t.Fatal("empty user token")
	}
	if _, err := k.token(t.Context(), name, "wrong", "service-"+name); err == nil {
		t.Error("token with a wrong password succeeded")
	}

	// An application credential authenticates, and its token's catalog
	// holds an endpoint added in a region of its own.
	id, secret := k.CreateApplicationCredential(t, name, "pw", "service-"+name, "ac-"+name)
	region := "Region-" + name
	k.AddEndpoint(t, "attestation", region, "internal", "http://127.0.0.1:9/"+name)
	body, _ := json.Marshal(map[string]any{"auth": map[string]any{"identity": map[string]any{
		"methods": []string{"application_credential"}, "application_credential": map[string]string{"id": id, "secret": secret}}}})
	resp, err := http.Post(k.URL+"/auth/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || !strings.Contains(string(b), `"url": "http://127.0.0.1:9/`+name+`"`) ||
		!strings.Contains(string(b), `"region_id": "`+region+`"`) {
		t.Errorf("application credential auth = %s, catalog %s; want 201 with the endpoint", resp.Status, b)
	}
}

func TestSWTPM(t *testing.T) {
	t.Parallel()
	s := SWTPM(t, SWTPMOptions{})
	if s.TCTI != "swtpm:host=127.0.0.1,port="+s.ServerAddr[strings.LastIndex(s.ServerAddr, ":")+1:] {
		t.Errorf("TCTI = %q for %s", s.TCTI, s.ServerAddr)
	}
	if err := tpmGetRandom(t.Context(), s.ServerAddr); err != nil {
		t.Fatal(err)
	}
	if out := s.Tool(t, "tpm2_getrandom", "8", "--hex"); len(strings.TrimSpace(out)) != 16 {
		t.Errorf("tpm2_getrandom = %q", out)
	}
	// Extend PCR 16, restart: it is back to zero (a reboot).
	s.Tool(t, "tpm2_pcrextend", "16:sha256="+strings.Repeat("ab", 32))
	if out := s.Tool(t, "tpm2_pcrread", "sha256:16"); strings.Contains(out, "0x0000000000000000000000000000000000000000000000000000000000000000") {
		t.Fatalf("PCR 16 not extended: %s", out)
	}
	s.Stop(t)
	if err := tpmGetRandom(t.Context(), s.ServerAddr); err == nil {
		t.Fatal("TPM answers after Stop")
	}
	s.Start(t)
	if out := s.Tool(t, "tpm2_pcrread", "sha256:16"); !strings.Contains(out, "0x0000000000000000000000000000000000000000000000000000000000000000") {
		t.Errorf("PCR 16 not reset by restart: %s", out)
	}
}

func TestSWTPMEKCert(t *testing.T) {
	t.Parallel()
	s := SWTPM(t, SWTPMOptions{EKCert: true})
	for _, p := range []string{s.CACertPath, s.IssuerCertPath} {
		if b, err := os.ReadFile(p); err != nil || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
			t.Errorf("%s: %v", p, err)
		}
	}
	cert := filepath.Join(s.Dir, "ek-rsa.der")
	s.Tool(t, "tpm2_nvread", "-C", "o", "-o", cert, "0x01c00002")
	if fi, err := os.Stat(cert); err != nil || fi.Size() < 100 {
		t.Errorf("EK certificate from NV: %v", err)
	}
}

func TestMariaDB(t *testing.T) {
	t.Parallel()
	a, b := MariaDB(t), MariaDB(t)
	if a.Database == b.Database || a.Port != b.Port {
		t.Errorf("databases %q/%d and %q/%d", a.Database, a.Port, b.Database, b.Port)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// Log in over TCP as the test user, the way an application would.
	out, err := run(ctx, nil, "mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", itoa(a.Port), "-u", a.User,
		"-p"+a.Password, a.Database, "-N", "-e", "CREATE TABLE x (i INT); INSERT INTO x VALUES (42); SELECT i FROM x;")
	if err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("query = %q, %v", out, err)
	}
	if !strings.HasPrefix(a.DSN, "trustpool:") || !strings.Contains(a.DSN, "@tcp(127.0.0.1:"+itoa(a.Port)+")/"+a.Database) {
		t.Errorf("DSN = %q", a.DSN)
	}
}

func TestPython(t *testing.T) {
	t.Parallel()
	if p := Python(t); p != "/usr/bin/python3" {
		t.Errorf("Python() = %q", p)
	}
}

func TestFreePort(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < minPort || p > maxPort || seen[p] {
			t.Fatalf("freePort() = %d (seen before: %v)", p, seen[p])
		}
		seen[p] = true
	}
	if p := FreePort(t); p < minPort || p > maxPort || seen[p] {
		t.Errorf("FreePort() = %d (seen before: %v)", p, seen[p])
	}
}

// fakeT records a failure instead of failing the real test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}

func itoa(i int) string { return strconv.Itoa(i) }

// nonLoopbackAddr returns an IPv4 address of this machine other than
// loopback, or "" when it has none.
func nonLoopbackAddr() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return ""
}

// cleanupT runs a helper's cleanups when asked and records its errors.
type cleanupT struct {
	testing.TB
	cleanups []func()
	errs     []string
}

func (c *cleanupT) Helper()          {}
func (c *cleanupT) Cleanup(f func()) { c.cleanups = append(c.cleanups, f) }
func (c *cleanupT) Errorf(format string, a ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, a...))
}
func (c *cleanupT) end() {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
}

func TestStartProcess(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		wantErr      string
	}{
		{"clean exit on SIGTERM", `trap 'echo stopping; exit 0' TERM; echo started; while :; do sleep 0.05; done`, ""},
		{"killed by SIGTERM", `echo started; exec sleep 60`, "on SIGTERM"},
		{"exited early", `echo started; exit 3`, "exited before the test ended"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := &cleanupT{TB: t}
			p := StartProcess(ct, "sh", nil, "sh", "-c", tc.script)
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(p.Log(), "started") || (tc.name == "exited early" && !p.Exited()) {
				if time.Now().After(deadline) {
					t.Fatalf("%v: no start after 10s: %q", p, p.Log())
				}
				time.Sleep(20 * time.Millisecond)
			}
			ct.end()
			if tc.wantErr == "" {
				if len(ct.errs) != 0 || !strings.Contains(p.Log(), "stopping") {
					t.Errorf("errors %q, log %q; want none and a clean stop", ct.errs, p.Log())
				}
				return
			}
			if len(ct.errs) != 1 || !strings.Contains(ct.errs[0], tc.wantErr) {
				t.Errorf("errors %q; want one with %q", ct.errs, tc.wantErr)
			}
		})
	}
}

// A process the test kills on purpose (a crash) is not a failure, and its
// PID is the program's.
func TestProcessKill(t *testing.T) {
	ct := &cleanupT{TB: t}
	p := StartProcess(ct, "sh", nil, "sh", "-c", "echo started; exec sleep 60")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Log(), "started") {
		if time.Now().After(deadline) {
			t.Fatalf("%v: no start after 10s", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// "started" is printed before the exec, and /proc/PID/cmdline reads empty
	// while execve swaps the image: wait for the program's own argv.
	var b []byte
	var err error
	for {
		b, err = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID()))
		if err == nil && string(b) == "sleep\x0060\x00" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PID %d is not the program: %q, %v", p.PID(), b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Kill(ct)
	if !p.Exited() {
		t.Error("not exited after Kill")
	}
	ct.end()
	if len(ct.errs) != 0 {
		t.Errorf("errors %q after a deliberate kill", ct.errs)
	}
}
