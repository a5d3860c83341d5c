package localapi

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzFastDecode checks the reflection-free decoder against encoding/json:
// whatever it accepts, the strict decoder accepts with the same values.
func FuzzFastDecode(f *testing.F) {
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
	for _, s := range []string{
		`{}`, ` { } `, `{"hosts":[]}`, `{"hosts":null,"profile":null}`, `{"hosts":["a","b"],"trusted_host":"trusted","profile":"p"}`,
		"{\"hosts\" :\t[ \"a\" ,\r\n\"b\" ] , \"profile\":\"x\"}\n", `{"hosts":["a"],"hosts":["b"]}`, `{"HOSTS":["a"]}`,
		`{"hosts":["a"]}{}`, `{"hosts":["a"]} x`, `{"hosts":["a\u0062"]}`, `{"hosts":["` + "\xff" + `"]}`, `{"hosts":["a",]}`,
		`{"hosts":["a"],}`, `{"hosts":[1]}`, `{"profile":"a\"b"}`, `{"hosts":["a"], "x":1}`, `{"hosts":"a"}`, `{"profile":nul}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got, ok := fastFilterRequest([]byte(body), 3)
		if !ok {
			return
		}
		want, err := decodeFilterRequest([]byte(body))
		if err != nil {
			t.Fatalf("fast decoder accepted %q, encoding/json rejects it: %v", body, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", body, got, want)
		}
	})
}

func TestFastDecodeShapes(t *testing.T) {
	for body, wantOK := range map[string]bool{
		`{"hosts":["a","b"],"trusted_host":"trusted","profile":null}`: true,
		` {"profile":"p"} `:             true,
		`{"hosts":[]}`:                  true,
		`{"hosts":["a"],"hosts":["b"]}`: false,
		`{"Hosts":["a"]}`:               false,
		`{"hosts":["\u0061"]}`:          false,
		`{"hosts":["a"]}{}`:             false,
		`{"hosts":["a"],"extra":true}`:  false,
		`{"hosts":["é"]}`:               false,
		`{"hosts":["a"]`:                false,
		`{"hosts":["a"],"profile":1}`:   false,
	} {
		_, ok := fastFilterRequest([]byte(body), 3)
		if ok != wantOK {
			t.Errorf("%q: fast path ok=%v, want %v", body, ok, wantOK)
		}
	}
}
