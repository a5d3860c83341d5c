package attestapi_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/attestapi"
)

// TestLearnListsOnTheWire: Learn's pcrs and facts are left out when nil
// (the service's defaults) and sent as [] when empty (none), and decode
// back the same way.
func TestLearnListsOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		in   attestapi.Learn
		want string
	}{
		{attestapi.Learn{Host: "h", Name: "p"}, `{"host":"h","name":"p"}`},
		{attestapi.Learn{Host: "h", Name: "p", Facts: []string{}}, `{"host":"h","name":"p","facts":[]}`},
		{attestapi.Learn{Host: "h", Name: "p", PCRs: []int{}, Facts: []string{"kernel"}}, `{"host":"h","name":"p","pcrs":[],"facts":["kernel"]}`},
	} {
		b, err := json.Marshal(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%+v encodes as %s, want %s", tc.in, b, tc.want)
		}
		var back attestapi.Learn
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.in, back); diff != "" {
			t.Errorf("%s decodes differently (-sent +decoded):\n%s", b, diff)
		}
	}
}
