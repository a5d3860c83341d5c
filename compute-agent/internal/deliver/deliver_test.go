package deliver_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/compute-agent/internal/attester"
	"github.com/trustpool/trustpool/compute-agent/internal/deliver"
	"github.com/trustpool/trustpool/compute-agent/internal/inject"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

const (
	launchID = "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	instance = "178b0921-8f85-4257-88b6-2e743b5a975c"
)

type host struct {
	sim   *tpmtest.Sim
	tpm   *tpm.TPM
	root  string
	state string
	d     *deliver.Deliverer
	// redelivered records OnRedelivered's calls.
	redelivered []string
}

func newHost(t *testing.T) *host {
	t.Helper()
	sim := tpmtest.Simulator(t)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := &host{sim: sim, tpm: tp, root: t.TempDir(), state: t.TempDir()}
	h.d = h.restart(t)
	if err := os.Mkdir(filepath.Join(h.root, instance), 0o700); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *host) restart(t *testing.T) *deliver.Deliverer {
	t.Helper()
	d, err := deliver.New(deliver.Config{TPM: h.tpm, Injector: &inject.Directory{Root: h.root}, StateDir: h.state,
		OnRedelivered: func(id string) { h.redelivered = append(h.redelivered, id) }})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// seal seals secret to the host's TPM as the service does, for launch and
// instance inst; ekPublic overrides the EK (nil: the host's).
func (h *host) seal(t *testing.T, launch, inst string, ekPublic []byte, secret []byte) *attestrpc.DeliverSecretArgs {
	t.Helper()
	ctx := t.Context()
	if ekPublic == nil {
		ek, err := h.tpm.EK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ekPublic = ek.Public
	}
	sel := []int{0, 7}
	pcrs, err := h.tpm.ReadPCRs(ctx, uint16(tpm2.TPMAlgSHA256), sel)
	if err != nil {
		t.Fatal(err)
	}
	s, err := importblob.Create(rand.Reader, ekPublic, sel, pcrs, launch, inst, secret)
	if err != nil {
		t.Fatal(err)
	}
	a := &attestrpc.DeliverSecretArgs{LaunchID: launch, InstanceID: instance, Blob: s.Blob, Receipt: json.RawMessage(`{"receipt":"x"}`)}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDeliver(t *testing.T) {
	ctx := t.Context()
	h := newHost(t)
	secret := []byte("correct horse battery staple")
	ok, err := h.d.InstancePresent(ctx, &attestrpc.InstancePresentArgs{InstanceID: instance})
	if err != nil || !ok.Present || ok.Injector != "directory" || ok.ProjectID != "" {
		t.Fatalf("InstancePresent = %+v, %v", ok, err)
	}
	if err := os.WriteFile(filepath.Join(h.root, instance+".owner"), []byte("p1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.d.InstancePresent(ctx, &attestrpc.InstancePresentArgs{InstanceID: instance}); err != nil || ok.ProjectID != "p1" {
		t.Fatalf("InstancePresent with an owner record = %+v, %v", ok, err)
	}
	args := h.seal(t, launchID, instance, nil, secret)
	res := h.d.DeliverSecret(ctx, args)
	if !res.Delivered {
		t.Fatalf("DeliverSecret = %+v", res)
	}
	got, err := os.ReadFile(filepath.Join(h.root, instance, inject.SecretFile))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("secret in the instance: %q, %v", got, err)
	}
	if r, _ := os.ReadFile(filepath.Join(h.root, instance, inject.ReceiptFile)); string(r) != `{"receipt":"x"}` {
		t.Errorf("receipt in the instance: %q", r)
	}
	// The same blob again, also after an agent restart: replayed.
	if res := h.d.DeliverSecret(ctx, args); res.Delivered || res.Reason != attestrpc.ReasonReplayed {
		t.Errorf("second delivery = %+v, want replayed", res)
	}
	if res := h.restart(t).DeliverSecret(ctx, args); res.Delivered || res.Reason != attestrpc.ReasonReplayed {
		t.Errorf("second delivery after restart = %+v, want replayed", res)
	}
	// A damaged record file is read as far as it makes sense.
	f, err := os.OpenFile(filepath.Join(h.state, "launches.log"), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("not-an-id\n")
	f.Close()
	if res := h.restart(t).DeliverSecret(ctx, args); res.Reason != attestrpc.ReasonReplayed {
		t.Errorf("after a damaged record line = %+v, want replayed", res)
	}
}

// TestDeliverRefusals: each refusal has its reason and writes nothing into
// the instance.
func TestDeliverRefusals(t *testing.T) {
	ctx := t.Context()
	h := newHost(t)
	secret := []byte("s3cr3t")
	otherEK := func() []byte {
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.ECCEKTemplate)}.Execute(h.sim)
		if err != nil {
			t.Fatal(err)
		}
		defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(h.sim) //nolint:errcheck // test cleanup
		return rsp.OutPublic.Bytes()
	}()
	ids := []string{"10000000-0000-4000-8000-000000000001", "10000000-0000-4000-8000-000000000002", "10000000-0000-4000-8000-000000000003",
		"10000000-0000-4000-8000-000000000004", "10000000-0000-4000-8000-000000000005"}
	tests := []struct {
		name string
		args func() *attestrpc.DeliverSecretArgs
		want string
	}{
		{"not this host's instance", func() *attestrpc.DeliverSecretArgs {
			a := h.seal(t, ids[0], instance, nil, secret)
			a.InstanceID = "20000000-0000-4000-8000-000000000000"
			return a
		}, attestrpc.ReasonInstanceNotPresent},
		{"blob for another TPM", func() *attestrpc.DeliverSecretArgs {
			return h.seal(t, ids[1], instance, otherEK, secret)
		}, attestrpc.ReasonImportFailed},
		{"blob for another instance", func() *attestrpc.DeliverSecretArgs {
			return h.seal(t, ids[2], "30000000-0000-4000-8000-000000000000", nil, secret)
		}, attestrpc.ReasonInvalidBlob},
		{"malformed object", func() *attestrpc.DeliverSecretArgs {
			a := h.seal(t, ids[3], instance, nil, secret)
			a.Blob.Public = a.Blob.Public[:20]
			return a
		}, attestrpc.ReasonInvalidBlob},
		{"PCR extended after sealing", func() *attestrpc.DeliverSecretArgs {
			a := h.seal(t, ids[4], instance, nil, secret)
			if err := bootseed.Apply(h.sim, []bootseed.Extend{{PCR: 7, Digests: map[eventlog.Alg][]byte{eventlog.SHA256: eventlog.SHA256.Sum([]byte("x"))}}}); err != nil {
				t.Fatal(err)
			}
			return a
		}, attestrpc.ReasonPCRMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := h.d.DeliverSecret(ctx, tc.args())
			if res.Delivered || res.Reason != tc.want {
				t.Errorf("DeliverSecret = %+v, want reason %s", res, tc.want)
			}
			if _, err := os.Stat(filepath.Join(h.root, instance, inject.SecretFile)); err == nil {
				t.Error("a secret file was written")
			}
		})
	}
}

// FuzzDeliverArgs: deliver_secret's arguments (anyone with broker access can
// send them) decode and validate without panicking; what validates also
// reaches the blob parser.
func FuzzDeliverArgs(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("..", "..", "..", "internal", "importblob", "testdata", "blob.json"))
	if err != nil {
		f.Fatal(err)
	}
	args := []byte(`{"launch_id":"` + launchID + `","instance_id":"` + instance + `","receipt":{"receipt":"x"},"blob":` + string(seed) + `}`)
	f.Add(args)
	authorized, err := os.ReadFile(filepath.Join("..", "..", "..", "internal", "importblob", "testdata", "blob_authorized.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"launch_id":"` + launchID + `","instance_id":"` + instance + `","receipt":{"receipt":"x"},"blob":` + string(authorized) +
		`,"approvals":[{"kid":"0123456789abcdef","pcrs":[0,4,7,8,9],"policy_digest":"` + strings.Repeat("A", 43) + `=","signature":"MAYCAQECAQE="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) != nil {
			return
		}
		var a attestrpc.DeliverSecretArgs
		if err := deliverDecode(m, &a); err != nil {
			return
		}
		if a.Validate() != nil {
			return
		}
		_, _ = importblob.Parse(&a.Blob)
	})
}

func deliverDecode(m map[string]json.RawMessage, a *attestrpc.DeliverSecretArgs) error {
	return attester.DecodeArgs(m, a)
}

// TestDeliverAuthorized (API 1.2): a blob sealed under PolicyAuthorize is
// delivered with an approval of the host's PCRs; without one it is
// refused pcr_not_approved, with one the policy-signing key did not sign
// approval_invalid, and nothing reaches the instance.
func TestDeliverAuthorized(t *testing.T) {
	ctx := t.Context()
	h := newHost(t)
	key, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	forger, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := h.tpm.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sel := []int{0, 7}
	pcrs, err := h.tpm.ReadPCRs(ctx, uint16(tpm2.TPMAlgSHA256), sel)
	if err != nil {
		t.Fatal(err)
	}
	good, err := key.Approve(sel, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	other := map[int][]byte{0: pcrs[0], 7: eventlog.SHA256.Sum([]byte("another build"))}
	elsewhere, err := key.Approve(sel, other)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := forger.Approve(sel, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("authorized secret")
	args := func(id string, approvals ...attestrpc.PolicyApproval) *attestrpc.DeliverSecretArgs {
		s, err := importblob.CreateAuthorized(rand.Reader, ek.Public, sel, key.Public().TPMPublic(), id, instance, secret)
		if err != nil {
			t.Fatal(err)
		}
		a := &attestrpc.DeliverSecretArgs{LaunchID: id, InstanceID: instance, Blob: s.Blob, Receipt: json.RawMessage(`{"receipt":"x"}`), Approvals: approvals}
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tc := range []struct {
		name      string
		id        string
		approvals []attestrpc.PolicyApproval
		want      string
	}{
		{"no approvals", "40000000-0000-4000-8000-000000000001", nil, attestrpc.ReasonPCRNotApproved},
		{"another state approved", "40000000-0000-4000-8000-000000000002", []attestrpc.PolicyApproval{elsewhere}, attestrpc.ReasonPCRNotApproved},
		{"forged approval", "40000000-0000-4000-8000-000000000003", []attestrpc.PolicyApproval{forged}, attestrpc.ReasonApprovalInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.d.DeliverSecret(ctx, args(tc.id, tc.approvals...))
			if res.Delivered || res.Reason != tc.want {
				t.Errorf("DeliverSecret = %+v, want reason %s", res, tc.want)
			}
			if _, err := os.Stat(filepath.Join(h.root, instance, inject.SecretFile)); err == nil {
				t.Error("a secret file was written")
			}
		})
	}
	res := h.d.DeliverSecret(ctx, args("40000000-0000-4000-8000-000000000004", elsewhere, good))
	if !res.Delivered {
		t.Fatalf("DeliverSecret with the current state approved = %+v", res)
	}
	if got, err := os.ReadFile(filepath.Join(h.root, instance, inject.SecretFile)); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("secret in the instance: %q, %v", got, err)
	}
}
