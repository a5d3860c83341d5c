package tpm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

// bootSel are the PCRs the tests seal to: the whole firmware boot.
var bootSel = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// seedBoot gives a freshly reset TPM the measured boot of v.
func seedBoot(t testing.TB, open tpm.Opener, v bootseed.Variant) {
	t.Helper()
	c, err := open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := bootseed.Seed(t.Context(), c, v); err != nil {
		t.Fatal(err)
	}
}

// approve signs, with key, the PCR values a host that boots v has: the
// reference values computed offline from v's event log, as the service
// computes them for a profile.
func approve(t testing.TB, key *policykey.PrivateKey, v bootseed.Variant) attestrpc.PolicyApproval {
	t.Helper()
	log, _, err := bootseed.BuildLog(v, []eventlog.Alg{eventlog.SHA1, eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := evidence.ReferenceFromEventLog(log)
	if err != nil {
		t.Fatal(err)
	}
	a, err := key.Approve(bootSel, ref.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func unsealWith(ctx context.Context, agent *tpm.TPM, p *importblob.Parsed, approvals ...attestrpc.PolicyApproval) ([]byte, error) {
	key, err := agent.Unseal(ctx, p, approvals)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return p.Open(key, launchID, instanceID)
}

// checkAuthorized proves sealing to signed policies on one TPM: a blob
// sealed under PolicyAuthorize while the host runs build A unseals on A
// with A's approval and, after a reboot into build B, with B's approval,
// without being sealed again; a state nobody approved (B with only A's
// approval, the drifted build) does not unseal; and the TPM itself refuses
// forged approvals: a signature by another key for the right key
// (TPM2_VerifySignature fails), an approval whose digest was swapped, and
// a blob whose key was swapped for the forger's (TPM2_Unseal's policy
// check fails). A PolicyPCR blob sealed on A dies with the upgrade.
func checkAuthorized(t *testing.T, open tpm.Opener, reboot func()) {
	t.Helper()
	ctx := t.Context()
	agent, err := tpm.New(open, tpm.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	key, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	forger, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	okA, okB := approve(t, key, bootseed.BuildA()), approve(t, key, bootseed.BuildB())
	if bytes.Equal(okA.PolicyDigest, okB.PolicyDigest) {
		t.Fatal("builds A and B have the same PCRs")
	}

	seedBoot(t, open, bootseed.BuildA())
	ek, err := agent.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("data volume key, sealed on build A")
	sealed, err := importblob.CreateAuthorized(rand.Reader, ek.Public, bootSel, key.Public().TPMPublic(), launchID, instanceID, secret)
	if err != nil {
		t.Fatal(err)
	}
	p, err := importblob.Parse(&sealed.Blob)
	if err != nil {
		t.Fatal(err)
	}
	pcrA, _ := sealFor(t, agent, bootSel, secret) // bare PolicyPCR on A, for contrast
	pa, err := importblob.Parse(&pcrA.Blob)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := unsealWith(ctx, agent, p, okA); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("build A with A's approval: %v", err)
	}
	if _, err := unsealWith(ctx, agent, p); !errors.Is(err, tpm.ErrNotApproved) {
		t.Errorf("build A without approvals: %v, want %v", err, tpm.ErrNotApproved)
	}

	// The host upgrades: reboot into build B.
	reboot()
	seedBoot(t, open, bootseed.BuildB())
	if got, err := unsealWith(ctx, agent, p, okA, okB); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("build B with B approved, blob sealed on A: %v", err)
	}
	if _, err := unsealWith(ctx, agent, p, okA); !errors.Is(err, tpm.ErrNotApproved) {
		t.Errorf("build B with only A approved: %v, want %v", err, tpm.ErrNotApproved)
	}
	if _, err := unsealWith(ctx, agent, pa); !errors.Is(err, tpm.ErrPolicy) {
		t.Errorf("PolicyPCR blob sealed on A, unsealed on B: %v, want %v", err, tpm.ErrPolicy)
	}

	// Forgeries, each refused by the TPM.
	forgedB := approve(t, forger, bootseed.BuildB())
	forgedB.KID = okB.KID
	_, err = unsealWith(ctx, agent, p, forgedB)
	if !errors.Is(err, tpm.ErrApproval) || !errors.Is(err, tpm2.TPMRCSignature) {
		t.Errorf("B approved by another key: %v, want %v from TPM2_VerifySignature (TPM_RC_SIGNATURE)", err, tpm.ErrApproval)
	}
	swapped := okA
	swapped.PolicyDigest = okB.PolicyDigest // A's signature, B's digest
	if _, err := unsealWith(ctx, agent, p, swapped); !errors.Is(err, tpm.ErrApproval) || !errors.Is(err, tpm2.TPMRCSignature) {
		t.Errorf("A's approval relabelled as B's: %v, want %v (TPM_RC_SIGNATURE)", err, tpm.ErrApproval)
	}
	// The agent's own check (importblob.Parse) refuses a blob whose key was
	// swapped; past it, the TPM still does: the session reaches
	// PolicyAuthorize(forger), not the object's authPolicy.
	swappedKey := sealed.Blob
	swappedKey.AuthorizeKey = forger.Public().TPMPublic()
	if _, err := importblob.Parse(&swappedKey); !errors.Is(err, importblob.ErrInvalid) {
		t.Errorf("blob with the forger's key: Parse = %v, want %v", err, importblob.ErrInvalid)
	}
	forgerKey, _, err := importblob.CheckAuthorizeKey(forger.Public().TPMPublic())
	if err != nil {
		t.Fatal(err)
	}
	pf := *p
	pf.AuthorizeKey = forgerKey
	if _, err := unsealWith(ctx, agent, &pf, approve(t, forger, bootseed.BuildB())); !errors.Is(err, tpm.ErrPolicy) || !errors.Is(err, tpm2.TPMRCPolicyFail) {
		t.Errorf("forger's key and approval past Parse: %v, want %v (TPM_RC_POLICY_FAIL)", err, tpm.ErrPolicy)
	}

	// A state nobody approved.
	reboot()
	seedBoot(t, open, bootseed.Drifted())
	if _, err := unsealWith(ctx, agent, p, okA, okB); !errors.Is(err, tpm.ErrNotApproved) {
		t.Errorf("drifted build with A and B approved: %v, want %v", err, tpm.ErrNotApproved)
	}
}

func TestUnsealAuthorizedSimulator(t *testing.T) {
	sim := tpmtest.Simulator(t)
	checkAuthorized(t, sim.Opener(), func() { sim.Reboot(t) })
}

func TestUnsealAuthorizedSWTPM(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	sw := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true})
	checkAuthorized(t, swtpmOpener(sw.ServerAddr), func() { sw.Stop(t); sw.Start(t) })
}

// BenchmarkUnsealSWTPM compares the agent's TPM time to import and unseal
// a launch blob sealed under a bare PolicyPCR with one sealed under
// PolicyAuthorize (PolicyPCR, PolicyGetDigest, LoadExternal,
// VerifySignature, PolicyAuthorize), on the same swtpm in the same run;
// the authorized blob comes with three approvals, the current state's
// last. Each iteration unseals both, alternating which goes first; the
// metrics are the mean of each (ms/policypcr, ms/policyauthorize):
//
//	go test -run '^$' -bench BenchmarkUnsealSWTPM -benchtime 200x -count 3 ./internal/tpm/
func BenchmarkUnsealSWTPM(b *testing.B) {
	sw := servicetest.SWTPM(b, servicetest.SWTPMOptions{EKCert: true})
	open := swtpmOpener(sw.ServerAddr)
	c, err := open(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bootseed.Seed(b.Context(), c, bootseed.BuildA()); err != nil {
		b.Fatal(err)
	}
	c.Close()
	agent, err := tpm.New(open, tpm.Config{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	ek, err := agent.EK(ctx)
	if err != nil {
		b.Fatal(err)
	}
	pcrs, err := agent.ReadPCRs(ctx, uint16(tpm2.TPMAlgSHA256), bootSel)
	if err != nil {
		b.Fatal(err)
	}
	secret := []byte("benchmark secret")
	bare, err := importblob.Create(rand.Reader, ek.Public, bootSel, pcrs, launchID, instanceID, secret)
	if err != nil {
		b.Fatal(err)
	}
	key, err := policykey.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	auth, err := importblob.CreateAuthorized(rand.Reader, ek.Public, bootSel, key.Public().TPMPublic(), launchID, instanceID, secret)
	if err != nil {
		b.Fatal(err)
	}
	var approvals []attestrpc.PolicyApproval
	for _, v := range []bootseed.Variant{bootseed.BuildB(), bootseed.Drifted()} {
		approvals = append(approvals, approve(b, key, v))
	}
	cur, err := key.Approve(bootSel, pcrs)
	if err != nil {
		b.Fatal(err)
	}
	approvals = append(approvals, cur)
	pb, err := importblob.Parse(&bare.Blob)
	if err != nil {
		b.Fatal(err)
	}
	pa, err := importblob.Parse(&auth.Blob)
	if err != nil {
		b.Fatal(err)
	}
	unseal := func(p *importblob.Parsed, approvals []attestrpc.PolicyApproval) time.Duration {
		t0 := time.Now()
		k, err := agent.Unseal(ctx, p, approvals)
		if err != nil {
			b.Fatal(err)
		}
		clear(k)
		return time.Since(t0)
	}
	var dPCR, dAuth time.Duration
	n := 0
	for b.Loop() {
		// Alternate, so that load on the machine hits both alike.
		if n%2 == 0 {
			dPCR += unseal(pb, nil)
			dAuth += unseal(pa, approvals)
		} else {
			dAuth += unseal(pa, approvals)
			dPCR += unseal(pb, nil)
		}
		n++
	}
	b.ReportMetric(float64(dPCR.Microseconds())/float64(n)/1000, "ms/policypcr")
	b.ReportMetric(float64(dAuth.Microseconds())/float64(n)/1000, "ms/policyauthorize")
}
