package evidence

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/eventlog/eventlogtest"
)

// realScenario quotes, with a software AK, the PCR values a real log
// replays to (PCRs 0-9), so Verify runs on real firmware logs.
func realScenario(t testing.TB, log []byte) (scenario, Challenge, bool) {
	t.Helper()
	l, err := eventlog.Parse(log)
	if err != nil || !l.HasBank(eventlog.SHA256) {
		return scenario{}, Challenge{}, false
	}
	rep, err := l.Replay(eventlog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := map[int][]byte{}
	sel := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	for _, i := range sel {
		v, ok := rep[uint32(i)]
		if !ok {
			v = make([]byte, 32)
		}
		pcrs[i] = v
	}
	ch, err := NewChallenge(rand.Reader, t0, testHost, sel)
	if err != nil {
		t.Fatal(err)
	}
	return scenario{nonce: ch.Nonce, sel: sha256Sel(sel...), pcrs: pcrs, log: log,
		clock: tpm2.TPMSClockInfo{Clock: 1, ResetCount: 1, Safe: true}}, ch, true
}

// realLogFiles returns the real logs of go-tpm-tools (read from the module
// cache) and the generated complete boots of eventlogtest.Generated (edge
// cases: H-CRTM and StartupLocality, vendor info, SM3 bank, unusual event
// types, no ExitBootServices...).
func realLogFiles(t testing.TB) map[string][]byte {
	t.Helper()
	out := eventlogtest.GoTPMToolsLogs(t)
	for _, c := range eventlogtest.Generated(t) {
		if c.Boot {
			out["generated/"+c.Name] = c.Log
		}
	}
	return out
}

// TestVerifyRealLogs verifies every crypto-agile log of realLogFiles with
// a SHA-256 bank (that passes the event rules) against its replayed PCRs,
// then checks that tampered copies are rejected.
func TestVerifyRealLogs(t *testing.T) {
	k := newFakeAK(t, tpm2.TPMAlgECC)
	now := t0.Add(time.Second)
	verified := 0
	for name, log := range realLogFiles(t) {
		s, ch, ok := realScenario(t, log)
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			res, err := Verify(k.bind, ch, k.evidence(t, s), nil, Options{Now: now})
			l, _ := eventlog.Parse(log)
			if cerr := eventlog.CheckEvents(l, eventlog.SHA256); cerr != nil {
				// Logs the event rules refuse must be refused by Verify.
				if err == nil {
					t.Fatalf("Verify() = %v, CheckEvents = %v", err, cerr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if res.Boot == nil || res.Boot.SecureBoot == eventlog.SecureBootUnknown {
				t.Errorf("boot facts %+v", res.Boot)
			}
			verified++

			tampered := map[string]struct {
				log  []byte
				want error
			}{
				"truncated":                    {log[:len(log)-3], ErrEventLog},
				"appended_garbage":             {append(bytes.Clone(log), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13), ErrEventLog},
				"separator_data_changed":       {mutateEvent(t, log, func(e *eventlog.Event) bool { return e.Type == eventlog.EvSeparator }), ErrEventData},
				"secure_boot_variable_changed": {mutateEvent(t, log, func(e *eventlog.Event) bool { return e.Type == eventlog.EvEFIVariableDriverConf }), ErrEventData},
				"app_digest_changed":           {mutateDigest(t, log, eventlog.EvEFIBootServicesApp), ErrReplay},
			}
			for tn, tc := range tampered {
				s2 := s
				s2.log = tc.log
				ch2, _ := NewChallenge(rand.Reader, t0, testHost, ch.PCRs)
				s2.nonce = ch2.Nonce
				if _, err := Verify(k.bind, ch2, k.evidence(t, s2), nil, Options{Now: now}); !errors.Is(err, tc.want) {
					t.Errorf("%s: Verify() = %v, want %v", tn, err, tc.want)
				}
			}
		})
	}
	if verified < 13+8 { // go-tpm-tools logs with a SHA-256 bank + generated boots
		t.Errorf("only %d logs verified", verified)
	}
}

// dataEnd returns where event i's record ends (its data is just before).
func dataEnd(l *eventlog.Log, i, logLen int) int {
	if i+1 < len(l.Events) {
		return l.Events[i+1].Offset
	}
	return logLen
}

// mutateEvent flips the last data byte of the first event matching f.
func mutateEvent(t testing.TB, log []byte, f func(e *eventlog.Event) bool) []byte {
	t.Helper()
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Events {
		if f(&l.Events[i]) {
			out := bytes.Clone(log)
			out[dataEnd(l, i, len(log))-1] ^= 0x01
			return out
		}
	}
	t.Fatal("no matching event")
	return nil
}

// mutateDigest flips the first byte of the SHA-256 digest of the first
// event of type typ (digest digests come right after the 12-byte header
// and the 2-byte algorithm ids; find it by value inside the record).
func mutateDigest(t testing.TB, log []byte, typ eventlog.EventType) []byte {
	t.Helper()
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Events {
		e := &l.Events[i]
		if e.Type == typ {
			d, _ := e.Digest(eventlog.SHA256)
			rec := log[e.Offset:dataEnd(l, i, len(log))]
			pos := bytes.Index(rec, d)
			out := bytes.Clone(log)
			out[e.Offset+pos] ^= 0x01
			return out
		}
	}
	t.Fatal("no event of that type")
	return nil
}
