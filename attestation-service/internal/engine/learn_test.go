package engine_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// measureIMA measures files into the simulator's PCR 10 and appends them
// to the IMA lists at imaPath.
func measureIMA(t *testing.T, sim *tpmtest.Sim, imaPath string, files []bootseed.IMAFile, bootAggregate bool) {
	t.Helper()
	c, err := sim.Opener()(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	logs, err := bootseed.AppendIMA(c, files, bootAggregate)
	if err != nil {
		t.Fatal(err)
	}
	for path, b := range map[string][]byte{imaPath: logs.SHA1, imaPath + "_sha256": logs.SHA256} {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func sha256Hex(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// TestLearnFromEventLogEqualsLearnFromHost: the reference values computed
// offline from an event log (evidence.ReferenceFromEventLog) are exactly
// those learned from a host (the simulator) that booted that log, for the
// default choice and for every PCR and fact; and learning with IMA from
// that host allowlists the files of its IMA log, which it then satisfies
// while a file measured later fails it.
func TestLearnFromEventLogEqualsLearnFromHost(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	imaPath := filepath.Join(dir, "binary_runtime_measurements")
	measure := func(files []bootseed.IMAFile, bootAggregate bool) {
		t.Helper()
		measureIMA(t, sim, imaPath, files, bootAggregate)
	}
	measure([]bootseed.IMAFile{{Path: "/usr/bin/bash", Content: []byte("bash")}, {Path: "/usr/sbin/nova-compute", Content: []byte("nova")},
		{Path: "/tmp/scratch", Content: []byte("x")}}, true)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath, IMALogPath: imaPath})
	if err != nil {
		t.Fatal(err)
	}
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	eng, st, _ := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second, QuoteTimeout: 5 * time.Second,
		PCRs: pcrs, EnrollmentMode: engine.ModeAuto, Agents: &simAgent{tp: tp, ima: true}, Trigger: func(string) {}})
	if s := enroll(t, eng, tp); s != attestrpc.StateEnrolled {
		t.Fatalf("enrollment state %s", s)
	}
	if _, err := eng.Attest(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	fromHost, err := eng.LearnInput(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := evidence.ReferenceFromEventLog(raw)
	if err != nil {
		t.Fatal(err)
	}
	fromLog := policy.Input{PCRs: ref.PCRs, Boot: ref.Boot}
	all := []string{}
	for k := range fromHost.Boot.Map() {
		all = append(all, k)
	}
	for name, o := range map[string]policy.LearnOptions{
		"defaults":        {},
		"all PCRs, facts": {PCRs: evidence.LogPCRs, Facts: all},
		"PCRs alone":      {Facts: []string{}},
	} {
		t.Run(name, func(t *testing.T) {
			h, err := policy.Learn("p", fromHost, o)
			if err != nil {
				t.Fatal(err)
			}
			l, err := policy.Learn("p", fromLog, o)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(h, l); diff != "" {
				t.Errorf("learned from the host vs from its event log (-host +log):\n%s", diff)
			}
			if len(l.Profile.PCRs) < 8 {
				t.Errorf("learned PCRs %v", l.Profile.PCRs)
			}
		})
	}
	// The quote proves PCR 10 too; the log has nothing to say about it.
	if _, err := policy.Learn("p", fromLog, policy.LearnOptions{PCRs: []int{10}}); err == nil {
		t.Error("learned PCR 10 from a firmware event log")
	}

	// IMA: a new full verification, nothing recorded.
	before, err := st.GetHost(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	in, err := eng.LearnInputWithIMA(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	after, err := st.GetHost(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if string(before.State) != string(after.State) {
		t.Error("learning with IMA changed the host's state")
	}
	learned, err := policy.Learn("ima", in, policy.LearnOptions{IMA: true, IMAExclude: []string{"/tmp/"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"/usr/bin/bash":          {"sha256:" + sha256Hex("bash")},
		"/usr/sbin/nova-compute": {"sha256:" + sha256Hex("nova")},
	}
	if diff := cmp.Diff(want, learned.Profile.IMA.Allowlist); diff != "" {
		t.Errorf("learned allowlist (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(fromHost.PCRs, in.PCRs); diff != "" {
		t.Errorf("PCRs of the new verification (-last round +new):\n%s", diff)
	}
	body, err := policy.Marshal([]*policy.Profile{learned.Profile})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutProfile(ctx, store.Profile{Name: "ima", Body: string(body)}, store.Create); err != nil {
		t.Fatal(err)
	}
	if v, err := eng.Attest(ctx, "c1"); err != nil || v.Status != verdict.Trusted {
		t.Fatalf("host against the profile learned from it: %+v, %v", v, err)
	}
	measure([]bootseed.IMAFile{{Path: "/usr/bin/nc", Content: []byte("netcat")}}, false)
	if v, err := eng.Attest(ctx, "c1"); err != nil || v.Status != verdict.Untrusted {
		t.Errorf("a file measured after learning: %+v, %v; want untrusted", v, err)
	}
}

// TestLearnWithIMARefuses: no IMA learning when the service does not quote
// PCR 10, when the host keeps no IMA log, or when its evidence does not
// verify.
func TestLearnWithIMARefuses(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath, IMALogPath: filepath.Join(dir, "none")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pcrs []int
		ag   *simAgent
		want error
	}{
		{"PCR 10 not quoted", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, &simAgent{tp: tp, ima: true}, engine.ErrNoIMA},
		{"no IMA log", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, &simAgent{tp: tp}, engine.ErrNoIMA},
		{"unreachable", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, &simAgent{tp: tp, fail: errors.New("messaging timeout")}, engine.ErrNoEvidence},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			eng, _, _ := newTestEngine(t, d, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second, QuoteTimeout: 5 * time.Second,
				PCRs: tc.pcrs, EnrollmentMode: engine.ModeAuto, Agents: tc.ag, Trigger: func(string) {}})
			fail := tc.ag.fail
			tc.ag.fail = nil
			if s := enroll(t, eng, tp); s != attestrpc.StateEnrolled {
				t.Fatalf("enrollment state %s", s)
			}
			tc.ag.fail = fail
			if _, err := eng.LearnInputWithIMA(ctx, "c1"); !errors.Is(err, tc.want) {
				t.Errorf("LearnInputWithIMA = %v, want %v", err, tc.want)
			}
		})
	}
}
