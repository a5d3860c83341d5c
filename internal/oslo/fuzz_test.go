package oslo

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Fuzz targets for the parsers of untrusted input. Seeds come from
// testdata (the captured messages, the Python samples) and the table
// tests, and run under plain `go test`.

var fuzzURLSeeds = []string{
	"rabbit://u1:p%40ss@h1:5672,u2:p2@h2:5673,u3:p3@[fd00::3]:5672/nova_vhost",
	"rabbit://guest:guest@127.0.0.1:5672/?heartbeat_timeout_threshold=10&ssl=0",
	"rabbit://guest:guest@127.0.0.1:5672/?rabbit_quorum_queue=true",
	"rabbit://guest:guest@127.0.0.1:5672/?heartbeat=10",
	"rabbit://", "kombu://h", "amqp://h/", "rabbit://[fe80::1%25eth0]:5673/%2F",
	"rabbit://us%3Aer:p%2F%3F%23%25%20+@h/a/b+c%20d?ssl_ca_file=a+b&ssl_ca_file=%2Fc",
	"rabbit://a@b:c@h", "rabbit://,h1,,h2,", "rabbit://u:p/", "rabbit://[::1]x/", "rabbit://bücher.example",
}

// passwordsRedacted maps u's hosts to what Redacted leaves of them.
func passwordsRedacted(u *TransportURL) *TransportURL {
	r := *u
	r.Hosts = append([]Host(nil), u.Hosts...)
	for i := range r.Hosts {
		r.Hosts[i].Password = "***"
	}
	return &r
}

func FuzzParseTransportURL(f *testing.F) {
	for _, s := range fuzzURLSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := ParseTransportURL(raw)
		if err != nil {
			return
		}
		if len(u.Hosts) == 0 || u.VirtualHost == "" || (u.Scheme != "rabbit" && u.Scheme != "kombu") {
			t.Fatalf("incomplete result %#v", u)
		}
		// The redacted form parses back to the same URL, passwords aside.
		red := u.Redacted()
		back, err := ParseTransportURL(red)
		if err != nil {
			t.Fatalf("Redacted() = %q does not parse: %v", red, err)
		}
		if diff := cmp.Diff(passwordsRedacted(u), back); diff != "" {
			t.Fatalf("Redacted() = %q parses differently (-want +got):\n%s", red, diff)
		}
		// amqp091 reads every host's URI as we meant it.
		for i, h := range u.Hosts {
			if h.Port < 1 || h.Port > 65535 || h.Hostname == "" || h.Username == "" || h.Password == "" {
				t.Fatalf("host %d: %#v", i, h)
			}
			uri, err := amqp.ParseURI(u.AMQPURI(i, i%2 == 1))
			if err != nil {
				t.Fatalf("host %d: amqp091 rejects AMQPURI: %v", i, err)
			}
			got := Host{Hostname: uri.Host, Port: uri.Port, Username: uri.Username, Password: uri.Password}
			if got != h || uri.Vhost != u.VirtualHost {
				t.Fatalf("host %d: amqp091 reads %#v vhost %q, want %#v vhost %q", i, got, uri.Vhost, h, u.VirtualHost)
			}
		}
	})
}

// fuzzBodies adds every captured body and inner message as seeds.
func fuzzBodies(f *testing.F, samples ...[]wireSample) {
	f.Helper()
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"oslo.version": "3.0", "oslo.message": "{}"}`))
	f.Add([]byte(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"m\", \"_msg_id\": \"1\", \"_reply_q\": \"q\", \"_timeout\": 1e3, \"failure\": \"{\\\"class\\\": \\\"X_Remote\\\", \\\"module\\\": \\\"m_Remote\\\"}\", \"priority\": \"warn\", \"_context_\": \"\\ud800\"}"}`))
	for _, group := range samples {
		for _, s := range group {
			f.Add(s.body)
			f.Add([]byte(s.inner))
		}
	}
}

func allSamples(f *testing.F) [][]wireSample {
	f.Helper()
	return [][]wireSample{requestSamples(f), replySamples(f), notificationSamples(f)}
}

// roundTrip compares decoded values: raw JSON by meaning, empty and nil
// lists and maps alike.
var roundTrip = cmp.Options{
	rawJSON,
	cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().Type() != reflect.TypeFor[json.RawMessage]()
	}, cmpopts.EquateEmpty()),
}

func FuzzUnwrap(f *testing.F) {
	fuzzBodies(f, allSamples(f)...)
	f.Fuzz(func(t *testing.T, body []byte) {
		inner, err := Unwrap(body)
		if err != nil {
			return
		}
		if _, err := decodeObject(inner); err != nil {
			t.Fatalf("Unwrap returned a non-object: %v", err)
		}
		wrapped, err := Wrap(inner)
		if err != nil {
			t.Fatalf("Wrap(Unwrap(body)): %v", err)
		}
		again, err := Unwrap(wrapped)
		if err != nil {
			t.Fatalf("Unwrap(Wrap(inner)): %v", err)
		}
		if !cmp.Equal(json.RawMessage(inner), json.RawMessage(again), rawJSON) {
			t.Fatalf("Unwrap(Wrap(x)) = %s, want %s", again, inner)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	fuzzBodies(f, allSamples(f)...)
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeRequest(body)
		if err != nil {
			return
		}
		enc, err := EncodeRequest(r)
		if err != nil {
			t.Fatalf("EncodeRequest(DecodeRequest(body)): %v", err)
		}
		r2, err := DecodeRequest(enc)
		if err != nil {
			t.Fatalf("DecodeRequest(re-encoded): %v", err)
		}
		if diff := cmp.Diff(r, r2, roundTrip); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	fuzzBodies(f, allSamples(f)...)
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeReply(body)
		if err != nil {
			return
		}
		if r.Failure != nil && r.Result != nil {
			if _, err := EncodeReply(r); err == nil {
				t.Fatal("EncodeReply accepted a result and a failure")
			}
			return
		}
		enc, err := EncodeReply(r)
		if err != nil {
			t.Fatalf("EncodeReply(DecodeReply(body)): %v", err)
		}
		r2, err := DecodeReply(enc)
		if err != nil {
			t.Fatalf("DecodeReply(re-encoded): %v", err)
		}
		if r.Failure != nil {
			f := *r.Failure
			f.Class, f.Module = stripRemote(f.Class, f.Module) // as oslo re-serialises
			r.Failure = &f
		}
		if diff := cmp.Diff(r, r2, roundTrip); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

func FuzzDecodeNotification(f *testing.F) {
	fuzzBodies(f, allSamples(f)...)
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := DecodeNotification(body)
		if err != nil {
			return
		}
		if n.Priority != strings.ToUpper(n.Priority) {
			t.Fatalf("priority %q not upper case", n.Priority)
		}
		if n.EventType == "" || n.MessageID == "" {
			return // decodable, but EncodeNotification insists on both
		}
		enc, err := EncodeNotification(n)
		if err != nil {
			t.Fatalf("EncodeNotification(DecodeNotification(body)): %v", err)
		}
		n2, err := DecodeNotification(enc)
		if err != nil {
			t.Fatalf("DecodeNotification(re-encoded): %v", err)
		}
		if diff := cmp.Diff(n, n2, roundTrip); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// FuzzSalvage: the scans that look into messages too large or too broken
// to decode never panic and return only well-formed addresses.
func FuzzSalvage(f *testing.F) {
	fuzzBodies(f, allSamples(f)...)
	f.Add([]byte(`{"_msg_id": "a", "_reply_q": "reply_1"}`))
	f.Add([]byte(`{"oslo.version": "2.0", "oslo.message": "{\"_msg_id\": \"a\", \"_reply_q\": \"q\", \"x\": NaN}"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(what, v string, ok func(byte) bool, maxLen int) {
			if v == "" || len(v) > maxLen {
				t.Fatalf("%s %q: bad length", what, v)
			}
			for i := range len(v) {
				if !ok(v[i]) {
					t.Fatalf("%s %q: byte %q not allowed", what, v, v[i])
				}
			}
		}
		if m, r, ok := salvageReplyAddress(body); ok {
			check("msg id", m, msgIDByte, 64)
			check("reply queue", r, queueByte, 255)
		}
		ids := salvageMsgIDs(body)
		if len(ids) > maxSalvagedIDs {
			t.Fatalf("%d ids, max %d", len(ids), maxSalvagedIDs)
		}
		for _, id := range ids {
			check("msg id", id, msgIDByte, 64)
		}
	})
}
