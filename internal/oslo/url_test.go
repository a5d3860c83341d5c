package oslo

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/internal/config"
)

func guest(host string, port int) Host {
	return Host{Hostname: host, Port: port, Username: "guest", Password: "guest"}
}

func TestParseTransportURL(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want TransportURL
	}{
		// Verified against the real oslo (interop_results.json C_transport_url).
		{"verified: several hosts, encoded password, IPv6, vhost",
			"rabbit://u1:p%40ss@h1:5672,u2:p2@h2:5673,u3:p3@[fd00::3]:5672/nova_vhost",
			TransportURL{Scheme: "rabbit", VirtualHost: "nova_vhost", Hosts: []Host{
				{"h1", 5672, "u1", "p@ss"}, {"h2", 5673, "u2", "p2"}, {"fd00::3", 5672, "u3", "p3"},
			}}},
		{"verified: options", "rabbit://guest:guest@127.0.0.1:5672/?heartbeat_timeout_threshold=10&ssl=0",
			TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("127.0.0.1", 5672)},
				Options: map[string][]string{"heartbeat_timeout_threshold": {"10"}, "ssl": {"0"}}}},
		{"verified: quorum option", "rabbit://guest:guest@127.0.0.1:5672/?rabbit_quorum_queue=true",
			TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("127.0.0.1", 5672)},
				Options: map[string][]string{"rabbit_quorum_queue": {"true"}}}},
		// oslo's default transport_url.
		{"bare scheme", "rabbit://", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("localhost", 5672)}}},
		{"kombu alias, upper-case scheme", "KOMBU://h", TransportURL{Scheme: "kombu", VirtualHost: "/", Hosts: []Host{guest("h", 5672)}}},
		{"no port, no credentials", "rabbit://h1/", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("h1", 5672)}}},
		{"empty port", "rabbit://h1:/", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("h1", 5672)}}},
		{"port stays 5672 with ssl", "rabbit://u:p@h/?ssl=true", TransportURL{Scheme: "rabbit", VirtualHost: "/",
			Hosts: []Host{{"h", 5672, "u", "p"}}, Options: map[string][]string{"ssl": {"true"}}}},
		{"username only", "rabbit://u@h:1", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{{"h", 1, "u", "guest"}}}},
		{"empty password", "rabbit://u:@h", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{{"h", 5672, "u", "guest"}}}},
		{"credentials without host", "rabbit://u:p@/v", TransportURL{Scheme: "rabbit", VirtualHost: "v", Hosts: []Host{{"localhost", 5672, "u", "p"}}}},
		{"mixed credentials (oslo warns)", "rabbit://u:p@h1,h2:5673", TransportURL{Scheme: "rabbit", VirtualHost: "/",
			Hosts: []Host{{"h1", 5672, "u", "p"}, guest("h2", 5673)}}},
		{"empty host entries skipped", "rabbit://,h1,,h2,", TransportURL{Scheme: "rabbit", VirtualHost: "/",
			Hosts: []Host{guest("h1", 5672), guest("h2", 5672)}}},
		{"@ in username, last @ splits", "rabbit://a@b:c@h", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{{"h", 5672, "a@b", "c"}}}},
		{"colon in password", "rabbit://u:a:b@h", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{{"h", 5672, "u", "a:b"}}}},
		{"encoded reserved characters", "rabbit://us%3Aer:p%2F%3F%23%25%20+@h", TransportURL{Scheme: "rabbit", VirtualHost: "/",
			Hosts: []Host{{"h", 5672, "us:er", "p/?#% +"}}}},
		{"internationalised hostname", "rabbit://bücher.example_1", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("bücher.example_1", 5672)}}},
		{"non-ASCII credentials", "rabbit://j%C3%B6rg:p%C3%A4ss@h", TransportURL{Scheme: "rabbit", VirtualHost: "/",
			Hosts: []Host{{"h", 5672, "jörg", "päss"}}}},
		{"IPv6 without port", "rabbit://[::1]/", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("::1", 5672)}}},
		{"IPv6 with zone", "rabbit://[fe80::1%25eth0]:5673/", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("fe80::1%eth0", 5673)}}},
		{"vhost %2F names /", "rabbit://h/%2F", TransportURL{Scheme: "rabbit", VirtualHost: "/", Hosts: []Host{guest("h", 5672)}}},
		{"vhost with slash and plus", "rabbit://h/a/b+c%20d", TransportURL{Scheme: "rabbit", VirtualHost: "a/b+c d", Hosts: []Host{guest("h", 5672)}}},
		{"query plus is space, repeated keys kept", "rabbit://h?ssl_ca_file=a+b&ssl_ca_file=%2Fc", TransportURL{Scheme: "rabbit", VirtualHost: "/",
			Hosts: []Host{guest("h", 5672)}, Options: map[string][]string{"ssl_ca_file": {"a b", "/c"}}}},
		{"empty query parts skipped", "rabbit://h/?&ssl=1&", TransportURL{Scheme: "rabbit", VirtualHost: "/",
			Hosts: []Host{guest("h", 5672)}, Options: map[string][]string{"ssl": {"1"}}}},
		{"fixed quorum option name", "rabbit://h/?rabbit_quorum_max_memory_length=10", TransportURL{Scheme: "rabbit", VirtualHost: "/",
			Hosts: []Host{guest("h", 5672)}, Options: map[string][]string{"rabbit_quorum_max_memory_length": {"10"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTransportURL(tt.raw)
			if err != nil {
				t.Fatalf("ParseTransportURL(%q): %v", tt.raw, err)
			}
			if tt.want.Options == nil {
				tt.want.Options = map[string][]string{}
			}
			if diff := cmp.Diff(&tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseTransportURLErrors(t *testing.T) {
	tests := []struct {
		name, raw string
		wantMsg   string // part of the error text
		wantIs    error  // also wrapped, besides ErrInvalidTransportURL
	}{
		{"empty", "", "empty", nil},
		{"no scheme", "guest:guest@h:5672/", "no scheme", nil},
		{"single slash", "rabbit:/h", "no scheme", nil},
		{"amqp is AMQP 1.0", "amqp://guest:guest@h:5672/", "AMQP 1.0", nil},
		{"amqps", "amqps://h/", "AMQP 1.0", nil},
		{"other scheme", "kafka://h", `scheme "kafka" is not supported`, nil},
		{"kombu+memory", "kombu+memory:///", "not supported", nil},
		{"verified: unknown option", "rabbit://guest:guest@127.0.0.1:5672/?heartbeat=10",
			"no such option heartbeat in group [oslo_messaging_rabbit]", config.ErrUnknownKey},
		{"deprecated option name", "rabbit://h/?rabbit_use_ssl=1", "deprecated name, use ssl", config.ErrUnknownKey},
		{"later option", "rabbit://h/?rabbit_stream_fanout=true", "14.7.0", ErrUnsupportedOption},
		{"bad boolean", "rabbit://h/?ssl=maybe", "oslo_messaging_rabbit.ssl", config.ErrInvalidValue},
		{"bad integer", "rabbit://h/?heartbeat_timeout_threshold=ten", "heartbeat_timeout_threshold", config.ErrInvalidValue},
		{"empty value", "rabbit://h/?ssl=", `"ssl" has no value`, nil},
		{"key without =", "rabbit://h/?ssl", `"ssl" has no value`, nil},
		{"no option name", "rabbit://h/?=1", "no option name", nil},
		{"bad query escape", "rabbit://h/?ssl=%zz", "percent-encoding", nil},
		{"fragment", "rabbit://u:p#x@h/", "fragment", nil},
		{"bad port", "rabbit://h:abc/", "port is not a number", nil},
		{"port zero", "rabbit://h:0/", "port is not a number", nil},
		{"port too big", "rabbit://h:65536/", "port is not a number", nil},
		{"signed port", "rabbit://h:+5/", "port is not a number", nil},
		{"unbracketed IPv6", "rabbit://u:p@fd00::3:5672/", "brackets", nil},
		{"unclosed bracket", "rabbit://[fd00::3:5672/", `closing "]"`, nil},
		{"junk after bracket", "rabbit://[::1]x/", `after "]"`, nil},
		{"IPv4 in brackets", "rabbit://[127.0.0.1]/", "not an IPv6 address", nil},
		{"not an address in brackets", "rabbit://[abc]/", "not an IPv6 address", nil},
		{"empty zone", "rabbit://[fe80::1%25]/", "empty IPv6 zone", nil},
		{"bracket in hostname", "rabbit://h]x/", "invalid character", nil},
		{"quote in hostname", "rabbit://h\"x/", "invalid character", nil},
		{"forgotten host", "rabbit://u:p/", "port is not a number", nil},
		{"bad password escape", "rabbit://u:p%zz@h/", "password: invalid percent-encoding", nil},
		{"bad username escape", "rabbit://%zz:p@h/", "username", nil},
		{"bad vhost escape", "rabbit://h/%zz", "virtual host", nil},
		{"escape not UTF-8", "rabbit://u:%ff@h/", "invalid percent-encoding", nil},
		{"space", "rabbit://h /", "space or control", nil},
		{"newline", "rabbit://h/\n", "space or control", nil},
		{"raw invalid UTF-8", "rabbit://h/\xff", "UTF-8", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseTransportURL(tt.raw)
			if err == nil {
				t.Fatalf("ParseTransportURL(%q) = %v, want error", tt.raw, u)
			}
			if !errors.Is(err, ErrInvalidTransportURL) {
				t.Errorf("error %v does not wrap ErrInvalidTransportURL", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

// TestParseErrorsHideSecrets: no error quotes a password.
func TestParseErrorsHideSecrets(t *testing.T) {
	for _, raw := range []string{
		"rabbit://u:s3cret@h:bad/",
		"rabbit://u:s3cret@fd00::1:5672/",
		"rabbit://u:s3cret%zz@h/",
		"rabbit://u:s3cret@[::1]junk/",
		"rabbit://u:s3cret@h/?heartbeat=1",
		"rabbit://u:s3cret#@h/",
		"amqp://u:s3cret@h/",
		"rabbit://u:s3cret@h]/",
		"rabbit://u:s3cret/vhost",
		"rabbit://u:s3cret:x/",
		"rabbit://u:s3/cret@h/",
	} {
		_, err := ParseTransportURL(raw)
		if err == nil {
			t.Errorf("%q parsed", raw)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error for %q reveals the password: %v", raw, err)
		}
	}
}

func TestApplyOptions(t *testing.T) {
	// Verified with the real oslo: these are the effective values.
	u, err := ParseTransportURL("rabbit://guest:guest@127.0.0.1:5672/?heartbeat_timeout_threshold=10&ssl=0")
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultRabbitOptions()
	o.SSL = true
	if err := u.ApplyOptions(&o); err != nil {
		t.Fatal(err)
	}
	if o.HeartbeatTimeoutThreshold != 10 || o.SSL || o.RabbitQuorumQueue {
		t.Errorf("got threshold %d ssl %v quorum %v, want 10 false false", o.HeartbeatTimeoutThreshold, o.SSL, o.RabbitQuorumQueue)
	}

	u, err = ParseTransportURL("rabbit://h/?ssl_ca_file=%2Fa&ssl_ca_file=%2Fb&amqp_durable_queues=on&kombu_reconnect_delay=0.5&rabbit_quroum_max_memory_bytes=7")
	if err != nil {
		t.Fatal(err)
	}
	o = DefaultRabbitOptions()
	if err := u.ApplyOptions(&o); err != nil {
		t.Fatal(err)
	}
	want := DefaultRabbitOptions()
	want.SSLCAFile = "/a,/b" // oslo joins repeated keys with ","
	want.AMQPDurableQueues = true
	want.KombuReconnectDelay = 0.5
	want.RabbitQuroumMaxMemoryBytes = 7
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// All bad options are reported at once.
	u = &TransportURL{Scheme: "rabbit", Options: map[string][]string{"nope": {"1"}, "ssl": {"maybe"}, "heartbeat_rate": {"x"}}}
	err = u.ApplyOptions(&o)
	for _, name := range []string{"nope", "ssl", "heartbeat_rate"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error %v does not mention %s", err, name)
		}
	}
}

func TestRedacted(t *testing.T) {
	for raw, want := range map[string]string{
		"rabbit://u1:p%40ss@h1:5672,u2:s3cret@h2:5673,u3:p3@[fd00::3]:5672/nova_vhost": "rabbit://u1:***@h1:5672,u2:***@h2:5673,u3:***@[fd00::3]:5672/nova_vhost",
		"kombu://": "kombu://guest:***@localhost:5672/%2F",
		"rabbit://a%40b:x@[fe80::1%25eth0]/a%2Fb": "rabbit://a%40b:***@[fe80::1%25eth0]:5672/a%2Fb",
		"rabbit://u:p@h/v?ssl=1&heartbeat_rate=3": "rabbit://u:***@h:5672/v?heartbeat_rate=3&ssl=1",
	} {
		u, err := ParseTransportURL(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.Redacted(); got != want {
			t.Errorf("Redacted(%q) = %q, want %q", raw, got, want)
		}
		for _, s := range []string{u.String(), fmt.Sprint(u), fmt.Sprintf("%+v", u), fmt.Sprintf("%#v", u), fmt.Sprintf("%v", *u), fmt.Sprintf("%+v", u.Hosts), fmt.Sprintf("%#v", u.Hosts)} {
			if strings.Contains(s, "s3cret") || strings.Contains(s, "p@ss") {
				t.Errorf("formatted URL reveals a password: %s", s)
			}
		}
		var buf strings.Builder
		slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "url", u)
		if strings.Contains(buf.String(), "s3cret") || !strings.Contains(buf.String(), "***") {
			t.Errorf("slog output %q", buf.String())
		}
	}
}

func TestAMQPURI(t *testing.T) {
	type uri struct {
		Scheme, Host    string
		Port            int
		Username        string
		Password, Vhost string
	}
	u, err := ParseTransportURL("rabbit://us%3Aer:p%2F%3F%23%25%20+%40@h1:5673,j%C3%B6rg:x@[fd00::3]/a%2Fb%20c")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		i    int
		ssl  bool
		want uri
	}{
		{0, false, uri{Scheme: "amqp", Host: "h1", Port: 5673, Username: "us:er", Password: "p/?#% +@", Vhost: "a/b c"}},
		{1, true, uri{Scheme: "amqps", Host: "fd00::3", Port: 5672, Username: "jörg", Password: "x", Vhost: "a/b c"}},
	}
	for _, tt := range tests {
		raw := u.AMQPURI(tt.i, tt.ssl)
		got, err := amqp.ParseURI(raw)
		if err != nil {
			t.Fatalf("amqp091 cannot parse AMQPURI(%d) (%d bytes): %v", tt.i, len(raw), err)
		}
		if diff := cmp.Diff(tt.want, uri{got.Scheme, got.Host, got.Port, got.Username, got.Password, got.Vhost}); diff != "" {
			t.Errorf("host %d (-want +got):\n%s", tt.i, diff)
		}
	}
	// The default vhost "/" and an IPv6 zone survive too.
	u, err = ParseTransportURL("rabbit://[fe80::1%25eth0]:5673")
	if err != nil {
		t.Fatal(err)
	}
	got, err := amqp.ParseURI(u.AMQPURI(0, false))
	if err != nil {
		t.Fatal(err)
	}
	if got.Vhost != "/" || got.Host != "fe80::1%eth0" || got.Port != 5673 || got.Username != "guest" || got.Password != "guest" {
		t.Errorf("got %+v", got)
	}
}
