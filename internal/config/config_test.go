package config

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type defaultSection struct {
	Host            string   `toml:"host"`
	TransportURL    string   `toml:"transport_url"`
	ControlExchange string   `toml:"control_exchange"`
	Debug           bool     `toml:"debug"`
	Hosts           []string `toml:"hosts"`
	Ignored         string   `toml:"-"`
	unexported      string   //nolint:unused // must be invisible to Set and Load
}

type rabbitSection struct {
	HeartbeatTimeout int           `toml:"heartbeat_timeout_threshold"`
	HeartbeatRate    float64       `toml:"heartbeat_rate"`
	Durable          bool          `toml:"amqp_durable_queues"`
	Prefetch         uint16        `toml:"rabbit_qos_prefetch_count"`
	Ports            []int         `toml:"ports"`
	Backoff          time.Duration `toml:"backoff"`
	Bind             netip.Addr    `toml:"bind"`
	Untagged         string
}

// Validate exercises the per-section hook.
func (r *rabbitSection) Validate() error {
	if r.HeartbeatTimeout < 0 {
		return errors.New("oslo_messaging_rabbit.heartbeat_timeout_threshold: must not be negative")
	}
	return nil
}

type testConfig struct {
	Default defaultSection `toml:"DEFAULT"`
	Rabbit  rabbitSection  `toml:"oslo_messaging_rabbit"`
	Nested  struct {
		Inner struct {
			A int `toml:"a"`
		} `toml:"inner"`
	} `toml:"nested"`
}

// Validate exercises the whole-config hook.
func (c *testConfig) Validate() error {
	if c.Default.Host == "forbidden" {
		return errors.New("DEFAULT.host: forbidden")
	}
	return nil
}

func defaults() testConfig {
	var c testConfig
	c.Default.Host = "node1"
	c.Default.ControlExchange = "trustpool"
	c.Default.Hosts = []string{"a", "b"}
	c.Rabbit.HeartbeatTimeout = 60
	c.Rabbit.HeartbeatRate = 2
	return c
}

var cmpOpts = cmp.Options{cmp.AllowUnexported(defaultSection{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}

func TestSet(t *testing.T) {
	tests := []struct {
		key, value string
		want       func(*rabbitSection, *defaultSection)
		wantErr    error
	}{
		{key: "heartbeat_timeout_threshold", value: " 30 ", want: func(r *rabbitSection, _ *defaultSection) { r.HeartbeatTimeout = 30 }},
		{key: "heartbeat_timeout_threshold", value: "3x", wantErr: ErrInvalidValue},
		{key: "heartbeat_timeout_threshold", value: "", wantErr: ErrInvalidValue},
		{key: "heartbeat_rate", value: "0.5", want: func(r *rabbitSection, _ *defaultSection) { r.HeartbeatRate = 0.5 }},
		{key: "heartbeat_rate", value: "fast", wantErr: ErrInvalidValue},
		{key: "rabbit_qos_prefetch_count", value: "65535", want: func(r *rabbitSection, _ *defaultSection) { r.Prefetch = 65535 }},
		{key: "rabbit_qos_prefetch_count", value: "65536", wantErr: ErrInvalidValue},
		{key: "rabbit_qos_prefetch_count", value: "-1", wantErr: ErrInvalidValue},
		{key: "ports", value: "1, 2,3", want: func(r *rabbitSection, _ *defaultSection) { r.Ports = []int{1, 2, 3} }},
		{key: "ports", value: "", want: func(r *rabbitSection, _ *defaultSection) { r.Ports = []int{} }},
		{key: "ports", value: "1,,2", wantErr: ErrInvalidValue},
		{key: "ports", value: "1,b", wantErr: ErrInvalidValue},
		{key: "backoff", value: "1m30s", want: func(r *rabbitSection, _ *defaultSection) { r.Backoff = 90 * time.Second }},
		{key: "backoff", value: "90", wantErr: ErrInvalidValue},
		{key: "bind", value: "127.0.0.1", want: func(r *rabbitSection, _ *defaultSection) { r.Bind = netip.MustParseAddr("127.0.0.1") }},
		{key: "bind", value: "localhost", wantErr: ErrInvalidValue},
		{key: "Untagged", value: "x", want: func(r *rabbitSection, _ *defaultSection) { r.Untagged = "x" }},
		{key: "untagged", value: "y", want: func(r *rabbitSection, _ *defaultSection) { r.Untagged = "y" }},
		{key: "HeartBeat_Timeout_Threshold", value: "1", wantErr: ErrUnknownKey},
		{key: "nope", value: "1", wantErr: ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			c := defaults()
			want := defaults()
			err := Set(&c.Rabbit, tt.key, tt.value)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Set() error = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.key) && errors.Is(tt.wantErr, ErrUnknownKey) {
					t.Errorf("error %q does not name the key", err)
				}
			} else {
				if err != nil {
					t.Fatalf("Set() error = %v", err)
				}
				tt.want(&want.Rabbit, &want.Default)
			}
			if diff := cmp.Diff(want, c, cmpOpts); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetBoolAndStrings(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  bool
		ok    bool
	}{
		{"true", true, true}, {"Yes", true, true}, {"ON", true, true}, {"1", true, true}, {" on ", true, true},
		{"false", false, true}, {"no", false, true}, {"Off", false, true}, {"0", false, true},
		{"", false, false}, {"2", false, false}, {"y", false, false}, {"t", false, false},
	} {
		var d defaultSection
		d.Debug = !tt.want
		err := Set(&d, "debug", tt.value)
		if (err == nil) != tt.ok {
			t.Errorf("Set(debug=%q) error = %v, want ok=%v", tt.value, err, tt.ok)
			continue
		}
		if tt.ok && d.Debug != tt.want {
			t.Errorf("Set(debug=%q) = %v, want %v", tt.value, d.Debug, tt.want)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidValue) {
			t.Errorf("Set(debug=%q) error %v does not wrap ErrInvalidValue", tt.value, err)
		}
	}
	var d defaultSection
	if err := Set(&d, "host", "  spaced  "); err != nil || d.Host != "  spaced  " {
		t.Errorf("string value not kept verbatim: %q, %v", d.Host, err)
	}
	if err := Set(&d, "hosts", "x , y"); err != nil || !cmp.Equal(d.Hosts, []string{"x", "y"}) {
		t.Errorf("list = %q, %v", d.Hosts, err)
	}
	for _, key := range []string{"Ignored", "-", "unexported"} {
		if err := Set(&d, key, "v"); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Set(%q) error = %v, want ErrUnknownKey", key, err)
		}
	}
}

func TestSetBadSection(t *testing.T) {
	var d defaultSection
	var nilp *defaultSection
	for _, sec := range []any{d, nilp, nil, new(int)} {
		if err := Set(sec, "host", "x"); err == nil {
			t.Errorf("Set(%T) succeeded", sec)
		}
	}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "test.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadLayers(t *testing.T) {
	file := writeFile(t, `
[DEFAULT]
host = "from-file"
transport_url = "rabbit://guest:guest@127.0.0.1:5672/"
hosts = ["f1"]

[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 10
heartbeat_rate = 3
amqp_durable_queues = true
backoff = "5s"
bind = "::1"
[nested.inner]
a = 7
`)
	c := defaults()
	err := Load(&c, LoadOptions{
		File: file,
		Environ: []string{
			"PATH=/bin",
			"TRUSTPOOL_DEFAULT__HOST=from-env",
			"TRUSTPOOL_OSLO_MESSAGING_RABBIT__HEARTBEAT_TIMEOUT_THRESHOLD=20",
			"TRUSTPOOL_OTHER_BINARY__KEY=ignored",
			"TRUSTPOOL_NO_SEPARATOR=ignored",
		},
		Overrides: []string{"oslo_messaging_rabbit.heartbeat_timeout_threshold=30", "DEFAULT.debug=yes"},
	})
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	want := defaults()
	want.Default.Host = "from-env"
	want.Default.TransportURL = "rabbit://guest:guest@127.0.0.1:5672/"
	want.Default.Hosts = []string{"f1"}
	want.Default.Debug = true
	want.Rabbit.HeartbeatTimeout = 30
	want.Rabbit.HeartbeatRate = 3
	want.Rabbit.Durable = true
	want.Rabbit.Backoff = 5 * time.Second
	want.Rabbit.Bind = netip.MustParseAddr("::1")
	want.Nested.Inner.A = 7
	if diff := cmp.Diff(want, c, cmpOpts); diff != "" {
		t.Errorf("Load() mismatch (-want +got):\n%s", diff)
	}
}

func TestLoadDoesNotAliasDefaults(t *testing.T) {
	shared := []string{"keep1", "keep2"}
	c := defaults()
	c.Default.Hosts = shared
	if err := Load(&c, LoadOptions{File: writeFile(t, "[DEFAULT]\nhosts = [\"x\"]\n"), Environ: []string{}}); err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(shared, []string{"keep1", "keep2"}) {
		t.Errorf("Load wrote into the default slice: %q", shared)
	}
}

// TestLoadReportsAllProblems checks that every problem of every layer comes
// back at once, each naming section.key.
func TestLoadReportsAllProblems(t *testing.T) {
	file := writeFile(t, `
[DEFAULT]
host = 5
tpyo = "x"
[oslo_messaging_rabbit]
heartbeat_timeout_threshold = -1
heartbeat_rate = "fast"
[nested]
inner = { a = 1, b = 2 }
[unknown_section]
x = 1
`)
	c := defaults()
	err := Load(&c, LoadOptions{
		File: file,
		Environ: []string{
			"TRUSTPOOL_DEFAULT__DEBUG=maybe",
			"TRUSTPOOL_DEFAULT__HOTS=x",
		},
		Overrides: []string{"DEFAULT.nope=1", "bogus.key=1", "noequals", "oslo_messaging_rabbit.ports=1,x"},
	})
	if err == nil {
		t.Fatal("Load() succeeded")
	}
	msg := err.Error()
	for _, want := range []string{
		file + ": DEFAULT.host: invalid configuration value",
		file + ": DEFAULT.tpyo: unknown configuration key",
		file + ": oslo_messaging_rabbit.heartbeat_rate: invalid configuration value",
		file + ": nested.inner.b: unknown configuration key",
		file + ": unknown_section: unknown configuration section",
		"env TRUSTPOOL_DEFAULT__DEBUG: DEFAULT.debug: invalid configuration value",
		"env TRUSTPOOL_DEFAULT__HOTS: DEFAULT.hots: unknown configuration key",
		"flag: DEFAULT.nope: unknown configuration key",
		"flag: bogus: unknown configuration section",
		`override "noequals" is not section.key=value`,
		"flag: oslo_messaging_rabbit.ports: list element 1: invalid configuration value",
		"oslo_messaging_rabbit.heartbeat_timeout_threshold: must not be negative", // section Validate
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q; got:\n%s", want, msg)
		}
	}
	if got := len(strings.Split(msg, "\n")); got != 12 {
		t.Errorf("got %d problems, want 12:\n%s", got, msg)
	}
	for _, sentinel := range []error{ErrUnknownKey, ErrUnknownSection, ErrInvalidValue} {
		if !errors.Is(err, sentinel) {
			t.Errorf("error does not wrap %v", sentinel)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Section == "" {
		t.Errorf("error has no *FieldError: %v", err)
	}
}

func TestLoadValidateHook(t *testing.T) {
	c := defaults()
	err := Load(&c, LoadOptions{Environ: []string{}, Overrides: []string{"DEFAULT.host=forbidden"}})
	if err == nil || !strings.Contains(err.Error(), "DEFAULT.host: forbidden") {
		t.Fatalf("Load() error = %v, want the Validate error", err)
	}
}

func TestLoadFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.toml")
	tests := []struct {
		name    string
		opts    LoadOptions
		wantErr bool
	}{
		{"no file", LoadOptions{}, false},
		{"optional missing file", LoadOptions{File: missing, FileOptional: true}, false},
		{"required missing file", LoadOptions{File: missing}, true},
		{"syntax error", LoadOptions{File: writeFile(t, "[DEFAULT\n")}, true},
		{"section not a table", LoadOptions{File: writeFile(t, "DEFAULT = 1\n")}, true},
		{"duplicate key", LoadOptions{File: writeFile(t, "[DEFAULT]\nhost='a'\nhost='b'\n")}, true},
		{"empty file", LoadOptions{File: writeFile(t, "")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Environ = []string{}
			c := defaults()
			err := Load(&c, tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Load() error = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr {
				if diff := cmp.Diff(defaults(), c, cmpOpts); diff != "" {
					t.Errorf("defaults changed (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestLoadNamesMissingDefaultFile: a daemon started without -config-file whose
// default file does not exist must say which path it looked for, not only
// which keys are missing.
func TestLoadNamesMissingDefaultFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.toml")
	c := defaults()
	err := Load(&c, LoadOptions{File: missing, FileOptional: true, Environ: []string{}, Overrides: []string{"DEFAULT.host=forbidden"}})
	if !errors.Is(err, ErrDefaultFileMissing) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "-config-file") {
		t.Errorf("Load() error = %v, want it to name %s and -config-file", err, missing)
	}
	if !strings.Contains(err.Error(), "DEFAULT.host: forbidden") {
		t.Errorf("Load() error = %v, want the validation problem too", err)
	}
	// Without problems a missing default file is fine (environment-only setups).
	c = defaults()
	if err := Load(&c, LoadOptions{File: missing, FileOptional: true, Environ: []string{}}); err != nil {
		t.Errorf("Load() with a valid configuration and no default file = %v", err)
	}
	// Flags: no -config-file means the default path, optional.
	var f Flags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f.Register(fs, missing)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if o := f.LoadOptions(); o.File != missing || !o.FileOptional {
		t.Errorf("LoadOptions() = %+v, want the optional default file", o)
	}
}

func TestLoadBadDestination(t *testing.T) {
	var notSections struct {
		X int `toml:"x"`
	}
	for _, dst := range []any{nil, testConfig{}, (*testConfig)(nil), &notSections} {
		if err := Load(dst, LoadOptions{Environ: []string{}}); err == nil {
			t.Errorf("Load(%T) succeeded", dst)
		}
	}
}

func TestLoadReadsProcessEnvironment(t *testing.T) {
	t.Setenv("TRUSTPOOL_DEFAULT__CONTROL_EXCHANGE", "from-process-env")
	c := defaults()
	if err := Load(&c, LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	if c.Default.ControlExchange != "from-process-env" {
		t.Errorf("control_exchange = %q", c.Default.ControlExchange)
	}
}

func TestFlags(t *testing.T) {
	var f Flags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f.Register(fs, "/etc/trustpool/test.toml")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(LoadOptions{File: "/etc/trustpool/test.toml", FileOptional: true}, f.LoadOptions()); diff != "" {
		t.Errorf("default LoadOptions mismatch (-want +got):\n%s", diff)
	}

	var g Flags
	fs = flag.NewFlagSet("test", flag.ContinueOnError)
	g.Register(fs, "/etc/trustpool/test.toml")
	if err := fs.Parse([]string{"--config-file", "/tmp/x.toml", "--set", "DEFAULT.host=a", "-set=DEFAULT.debug=true"}); err != nil {
		t.Fatal(err)
	}
	want := LoadOptions{File: "/tmp/x.toml", Overrides: []string{"DEFAULT.host=a", "DEFAULT.debug=true"}}
	if diff := cmp.Diff(want, g.LoadOptions()); diff != "" {
		t.Errorf("LoadOptions mismatch (-want +got):\n%s", diff)
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("keystone_authtoken", "auth_url"); got != "TRUSTPOOL_KEYSTONE_AUTHTOKEN__AUTH_URL" {
		t.Errorf("EnvName() = %q", got)
	}
	if got := EnvName("DEFAULT", "host"); got != "TRUSTPOOL_DEFAULT__HOST" {
		t.Errorf("EnvName() = %q", got)
	}
}
