package launcher

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestApprovalsFromApprovedVersionsOnly: a launch's signed approvals cover
// the PCR states of every approved version of the profile (and the quoted
// state), never those of a candidate, a canary or a retired version.
func TestApprovalsFromApprovedVersionsOnly(t *testing.T) {
	sim := tpmtest.Simulator(t)
	ekRsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: ekRsp.ObjectHandle}.Execute(sim) //nolint:errcheck // test cleanup
	ek := ekRsp.OutPublic.Bytes()
	key, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	doc := func(build string) string {
		return fmt.Sprintf("[[profile]]\nname = \"baseline\"\n[profile.pcrs]\n8 = [%q]\n9 = [%q]\n", hexSum(build+"8"), hexSum(build+"9"))
	}
	state := func(build string) string {
		x, _ := hex.DecodeString(hexSum(build + "8"))
		y, _ := hex.DecodeString(hexSum(build + "9"))
		d, err := importblob.PCRPolicy([]int{8, 9}, map[int][]byte{8: x, 9: y})
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(d)
	}
	quoted := map[int][]byte{}
	quoted[8], _ = hex.DecodeString(hexSum("a8"))
	quoted[9], _ = hex.DecodeString(hexSum("a9"))

	ctx := t.Context()
	st, err := store.Open(ctx, "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.PutProfile(ctx, store.Profile{Name: "baseline", Body: doc("a")}, store.Create); err != nil {
		t.Fatal(err)
	}
	if err := st.PutHost(ctx, &store.Host{Name: "compute-1", EKPublic: ek, AKPublic: []byte("ak"), Activated: true}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"b", "c", "d"} { // versions 2, 3, 4: candidates
		if _, err := st.AddProfileVersion(ctx, "baseline", doc(b), "test"); err != nil {
			t.Fatal(err)
		}
	}
	lkey, err := launch.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	signer := verdict.NewSigner(priv)
	now := time.Now()
	ag := &oldAgent{}
	l := New(Config{Store: st, Key: lkey, Signer: signer, Issuer: "test", Attester: trustedAttester{ek: ek, pcrs: quoted},
		Agents: ag, Servers: projectNova{}, Notifier: &notes{}, Now: func() time.Time { return now }, PolicyKey: key})
	approvedStates := func() []string {
		t.Helper()
		rec, err := l.Create(ctx, Caller{UserID: "u", ProjectID: "tenant"}, CreateRequest{KID: l.PublicKey().KID(),
			Sealed: l.sealed(t, "tenant", now.Add(time.Hour)), InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c"})
		if err != nil {
			t.Fatal(err)
		}
		l.process(ctx, <-l.jobs)
		if got, _ := ended(t, st, verdict.NewVerifier(signer.Public()), rec.ID); got.State != launch.StateDelivered {
			t.Fatalf("launch %s %v", got.State, got.Reasons)
		}
		last := ag.calls[len(ag.calls)-1]
		var out []string
		for i := range last.Approvals {
			if !key.Public().Verify(&last.Approvals[i]) {
				t.Errorf("approval %d does not verify", i)
			}
			out = append(out, hex.EncodeToString(last.Approvals[i].PolicyDigest))
		}
		slices.Sort(out)
		return out
	}
	want := func(builds ...string) []string {
		var out []string
		for _, b := range builds {
			out = append(out, state(b))
		}
		slices.Sort(out)
		return out
	}
	set := func(v int, from, to string, hosts ...string) {
		t.Helper()
		if err := st.SetProfileVersionState(ctx, "baseline", v, from, to, hosts, 0); err != nil {
			t.Fatal(err)
		}
	}
	if d := cmp.Diff(want("a"), approvedStates()); d != "" {
		t.Errorf("candidates only (-want +got):\n%s", d)
	}
	// Two approved versions besides the quoted build: both approved (the
	// flat profile is only the latest); the canary and the candidate not.
	set(2, store.VersionCandidate, store.VersionApproved)
	set(3, store.VersionCandidate, store.VersionApproved)
	set(4, store.VersionCandidate, store.VersionCanary, "compute-1")
	if d := cmp.Diff(want("a", "b", "c"), approvedStates()); d != "" {
		t.Errorf("versions 1-3 approved, 4 a canary (-want +got):\n%s", d)
	}
	set(2, store.VersionApproved, store.VersionRetired)
	if d := cmp.Diff(want("a", "c"), approvedStates()); d != "" {
		t.Errorf("version 2 retired (-want +got):\n%s", d)
	}
}
