package engine

import (
	"encoding/hex"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/verdict"
)

// The stored state leaves out what a verified round's summary shares with
// Previous, and reads back the same; anything that differs is kept.
func TestStateEncoding(t *testing.T) {
	pcrs := map[int][]byte{0: {1, 2}, 7: {3, 4}}
	boot := &eventlog.BootFacts{Version: eventlog.FactsVersion, SecureBoot: "enabled", KernelPath: "/boot/vmlinuz"}
	hexPCRs := map[string]string{}
	for i, v := range pcrs {
		hexPCRs[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	verified := &hostState{
		Previous: &evidence.Previous{PCRs: pcrs, Boot: boot},
		Last:     &Summary{Status: verdict.Trusted, Verified: true, Reachable: true, PCRs: hexPCRs, Boot: boot.Map()},
	}
	full, _ := json.Marshal(verified)
	b, err := encodeState(verified)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) >= len(full) {
		t.Errorf("stored state %d bytes, not smaller than the full %d", len(b), len(full))
	}
	got, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(verified, got, cmp.AllowUnexported(eventlog.BootFacts{})); diff != "" {
		t.Errorf("decoded state differs (-want +got):\n%s", diff)
	}
	// The caller's state is not changed by encoding.
	if verified.Last.PCRs == nil || verified.Last.Boot == nil {
		t.Error("encodeState cleared the caller's summary")
	}
	// A summary that differs from Previous is stored whole.
	other := *verified
	last := *verified.Last
	last.PCRs = map[string]string{"0": "ff"}
	other.Last = &last
	b, _ = encodeState(&other)
	got, _ = decodeState(b)
	if got.Last.PCRs["0"] != "ff" {
		t.Errorf("a summary unlike Previous read back as %v", got.Last.PCRs)
	}
}
