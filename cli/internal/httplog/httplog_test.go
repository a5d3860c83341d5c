package httplog

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestMasksSecrets sends Keystone-style requests carrying every kind of
// secret through the logging transport: the log shows none of them (tokens
// appear as their SHA-256), and the server and the caller still get the
// bodies unchanged.
func TestMasksSecrets(t *testing.T) {
	const (
		password = "s3cr3t-pw"
		appSec   = "app-cred-secret-value"
		token    = "gAAAAABtokenvalue"
		subject  = "gAAAAABsubjecttoken"
	)
	var gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		w.Header().Set("X-Subject-Token", subject)
		w.Header().Set("X-Openstack-Request-Id", "req-123")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"application_credential": {"id": "ac1", "secret": "`+appSec+`"}, "token": {"id": "`+token+`", "user": {"name": "bob"}}}`)
	}))
	defer srv.Close()
	var log bytes.Buffer
	c := &http.Client{Transport: &Transport{W: &log}}
	bodies := []string{
		`{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "bob", "password": "` + password + `"}}}}}`,
		`{"auth": {"identity": {"methods": ["application_credential"], "application_credential": {"id": "ac1", "secret": "` + appSec + `"}}}}`,
		`{"auth": {"identity": {"methods": ["token"], "token": {"id": "` + token + `"}}}}`,
		`{"token": "` + token + `", "sealed": "c2VhbGVk", "private_key": "k"}`,
		`{"password": "` + password + `"`, // malformed: not shown at all
	}
	for _, body := range bodies {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v3/auth/tokens", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Auth-Token", token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if gotBody != body {
			t.Errorf("server got %q, want %q", gotBody, body)
		}
		if !strings.Contains(string(rb), appSec) || resp.Header.Get("X-Subject-Token") != subject {
			t.Errorf("caller got %q / %q: the response was changed", rb, resp.Header.Get("X-Subject-Token"))
		}
	}
	out := log.String()
	for _, secret := range []string{password, appSec, token, subject, "c2VhbGVk", `"k"`} {
		if strings.Contains(out, secret) {
			t.Errorf("log shows %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{
		"REQ: curl -g -i -X POST " + srv.URL + "/v3/auth/tokens",
		`-H "X-Auth-Token: {SHA256}`, "X-Subject-Token: {SHA256}", `"password":"***"`, `"secret":"***"`,
		`"token":{"id":"***"}`, "RESP: [201]", "RESP BODY: ", `"user":{"name":"bob"}`,
		"POST call to " + srv.URL + "/v3/auth/tokens used request id req-123", "bytes of malformed JSON omitted",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestMaskText(t *testing.T) {
	toml := "[[profile]]\nname = \"a\"\n"
	if got := Mask([]byte(toml), "application/toml"); got != toml {
		t.Errorf("TOML shown as %q", got)
	}
	big := bytes.Repeat([]byte("x"), MaxBody+10)
	if got := Mask(big, "text/plain"); !strings.HasSuffix(got, "(10 more bytes)") || len(got) > MaxBody+40 {
		t.Errorf("long body not cut: %d bytes, ends %q", len(got), got[len(got)-20:])
	}
}
