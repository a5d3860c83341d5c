package evidence

import (
	"bytes"
	"errors"
	"testing"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
)

// TestReferenceFromEventLog: offline reference values are the replay of
// PCRs 0-9 (zero for a PCR the log never extends) and the facts of the
// log; a log that fails any check a host's log must pass is refused with
// that check's error.
func TestReferenceFromEventLog(t *testing.T) {
	raw, _, err := bootseed.BuildLog(bootseed.BuildB(), []eventlog.Alg{eventlog.SHA1, eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ReferenceFromEventLog(raw)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.Replay(eventlog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if len(ref.PCRs) != 10 {
		t.Errorf("%d PCRs, want 0-9", len(ref.PCRs))
	}
	for i, v := range ref.PCRs {
		want, ok := rep[uint32(i)] //nolint:gosec // 0-9
		if !ok {
			want = make([]byte, 32)
		}
		if !bytes.Equal(v, want) {
			t.Errorf("PCR %d = %x, replay %x", i, v, want)
		}
	}
	if ref.Boot.KernelPath != bootseed.BuildB().KernelPath || ref.Boot.Kernel == "" || len(ref.Boot.Withheld) != 0 {
		t.Errorf("facts %+v", ref.Boot)
	}

	retyped := bootseed.Events(bootseed.BuildA())
	for i := range retyped {
		if retyped[i].Type == eventlog.EvEFIBootServicesApp {
			retyped[i].Type = eventlog.EvEFIBootServicesDriver
			break
		}
	}
	retypedLog, _, err := bootseed.EncodeLog(retyped, []eventlog.Alg{eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	sha1Only, _, err := bootseed.BuildLog(bootseed.BuildA(), []eventlog.Alg{eventlog.SHA1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		log  []byte
		want error
	}{
		{"empty", nil, ErrEventLogMissing},
		{"truncated", raw[:len(raw)-7], ErrEventLog},
		{"no SHA-256 bank", sha1Only, ErrEventLogBank},
		{"retyped boot application", retypedLog, ErrEventData},
		{"too large", make([]byte, eventlog.MaxLogSize+1), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ReferenceFromEventLog(tc.log); !errors.Is(err, tc.want) {
				t.Errorf("ReferenceFromEventLog = %v, want %v", err, tc.want)
			}
		})
	}
}
