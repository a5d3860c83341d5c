package localapi_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzFilter sends arbitrary bodies to POST /v1/filter: the API must answer
// 200 with valid JSON that accounts for every requested host exactly once,
// or 400/413 with a JSON error, and never panic.
func FuzzFilter(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "requests.json"))
	if err != nil {
		f.Fatal(err)
	}
	var seeds []json.RawMessage
	if err := json.Unmarshal(b, &seeds); err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(string(s))
	}
	f.Add(`{"hosts":["` + "\xff\xfe" + `"],"trusted_host":"trusted"}`)
	api := newAPI(f, 1<<16, 100)
	f.Fuzz(func(t *testing.T, body string) {
		code, out := do(t, api, http.MethodPost, "/v1/filter", body)
		switch code {
		case http.StatusOK:
			var req struct {
				Hosts  []string `json:"hosts"`
				Answer *string  `json:"answer"`
			}
			if err := json.Unmarshal([]byte(body), &req); err != nil {
				t.Fatalf("accepted a body encoding/json rejects: %v", err)
			}
			if req.Answer != nil && *req.Answer == "mask" {
				var m struct {
					Mask *string `json:"mask"`
				}
				if err := json.Unmarshal([]byte(out), &m); err != nil || m.Mask == nil || len(*m.Mask) != len(req.Hosts) ||
					strings.Trim(*m.Mask, "01") != "" {
					t.Fatalf("mask answer %q for %d hosts", out, len(req.Hosts))
				}
				return
			}
			var d struct {
				Passes   []string          `json:"passes"`
				Rejected map[string]string `json:"rejected"`
			}
			if err := json.Unmarshal([]byte(out), &d); err != nil {
				t.Fatalf("200 with invalid JSON %q: %v", out, err)
			}
			var want []string
			for _, h := range req.Hosts {
				if !slices.Contains(want, h) {
					want = append(want, h)
				}
			}
			got := append([]string{}, d.Passes...)
			for h := range d.Rejected {
				got = append(got, h)
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(want, got) {
				t.Fatalf("hosts %q answered as %q", want, got)
			}
			if n := strings.Count(out, `"passes"`); n != 1 {
				t.Fatalf("odd answer %q", out)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(out), &e); err != nil || e.Error == "" {
				t.Fatalf("%d without a JSON error: %q", code, out)
			}
		default:
			t.Fatalf("unexpected status %d: %s", code, out)
		}
	})
}
