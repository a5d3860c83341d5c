package oslo

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBackoff(t *testing.T) {
	o := DefaultRabbitOptions() // interval 1, backoff 2, max 30
	b := backoff{opts: &o}
	var got []time.Duration
	for range 18 {
		got = append(got, b.next())
	}
	want := []time.Duration{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 30, 30, 30}
	for i := range want {
		want[i] *= time.Second
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backoff delays mismatch (-want +got):\n%s", diff)
	}
	b.reset()
	if d := b.next(); d != time.Second {
		t.Errorf("after reset: %v, want 1s", d)
	}
}

func TestRecentIDs(t *testing.T) {
	r := newRecentIDs(3)
	for _, id := range []string{"a", "b", "c"} {
		if !r.add(id) {
			t.Fatalf("add(%q) reported a duplicate", id)
		}
	}
	if r.add("a") {
		t.Error("add(a) twice accepted")
	}
	r.add("d") // evicts a
	if !r.add("a") {
		t.Error("a still remembered after eviction")
	}
	if !r.seen("d") || r.seen("zzz") {
		t.Error("seen() wrong")
	}
}

func TestEncodeArgs(t *testing.T) {
	tests := []struct {
		name    string
		in      any
		want    map[string]json.RawMessage
		wantErr bool
	}{
		{"nil", nil, map[string]json.RawMessage{}, false},
		{"typed nil map", map[string]any(nil), map[string]json.RawMessage{}, false},
		{"map", map[string]any{"a": 1}, map[string]json.RawMessage{"a": json.RawMessage("1")}, false},
		{"struct", struct {
			Nonce string `json:"nonce"`
		}{"n"}, map[string]json.RawMessage{"nonce": json.RawMessage(`"n"`)}, false},
		{"list", []int{1}, nil, true},
		{"scalar", "x", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodeArgs(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("encodeArgs error = %v, wantErr %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGoneQueues(t *testing.T) {
	g := &goneQueues{m: map[string]time.Time{}}
	if g.has("q") {
		t.Fatal("empty set has q")
	}
	g.add("q")
	if !g.has("q") {
		t.Fatal("q not remembered")
	}
	g.m["q"] = time.Now().Add(-2 * goneTTL)
	if g.has("q") {
		t.Error("q remembered past its TTL")
	}
	for i := range 250 {
		g.add(string(rune('a'+i%26)) + time.Duration(i).String())
	}
	if len(g.m) > 200 {
		t.Errorf("goneQueues holds %d entries, want ≤ 200", len(g.m))
	}
}
