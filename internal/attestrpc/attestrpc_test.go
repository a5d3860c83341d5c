package attestrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	testLaunch   = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
	testInstance = "178b0921-8f85-4257-88b6-2e743b5a975c"
)

func TestValidateRejects(t *testing.T) {
	nonce := bytes.Repeat([]byte{1}, 16)
	tests := []struct {
		name string
		v    interface{ Validate() error }
	}{
		{"register no host", &RegisterHostArgs{EKPublic: []byte{1}, AKPublic: []byte{1}}},
		{"register host with space", &RegisterHostArgs{Host: "a b", EKPublic: []byte{1}, AKPublic: []byte{1}}},
		{"register long host", &RegisterHostArgs{Host: strings.Repeat("h", 256), EKPublic: []byte{1}, AKPublic: []byte{1}}},
		{"register no ek", &RegisterHostArgs{Host: "h", AKPublic: []byte{1}}},
		{"register huge ak", &RegisterHostArgs{Host: "h", EKPublic: []byte{1}, AKPublic: make([]byte, MaxKeyBytes+1)}},
		{"register huge cert", &RegisterHostArgs{Host: "h", EKPublic: []byte{1}, AKPublic: []byte{1}, EKCertificate: make([]byte, MaxCertBytes+1)}},
		{"activate no secret", &ActivateCredentialArgs{Host: "h", ChallengeID: "c"}},
		{"activate no challenge", &ActivateCredentialArgs{Host: "h", Secret: []byte{1}}},
		{"changed no host", &MeasurementsChangedArgs{}},
		{"quote short nonce", &QuoteArgs{Nonce: []byte{1}, PCRSelection: []int{0}}},
		{"quote no pcrs", &QuoteArgs{Nonce: nonce}},
		{"quote pcr out of range", &QuoteArgs{Nonce: nonce, PCRSelection: []int{24}}},
		{"quote repeated pcr", &QuoteArgs{Nonce: nonce, PCRSelection: []int{1, 1}}},
		{"quote negative offset", &QuoteArgs{Nonce: nonce, PCRSelection: []int{0}, LogOffsets: LogOffsets{IMA: -1}}},
		{"redelivery wanted no host", &RedeliveryWantedArgs{LaunchID: testLaunch, InstanceID: testInstance}},
		{"redelivery wanted launch not a uuid", &RedeliveryWantedArgs{Host: "h", LaunchID: "../x", InstanceID: testInstance}},
		{"redelivery wanted upper-case instance", &RedeliveryWantedArgs{Host: "h", LaunchID: testLaunch, InstanceID: strings.ToUpper(testInstance)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.v.Validate(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
	ok := []interface{ Validate() error }{
		&RegisterHostArgs{Host: "compute-1", EKPublic: []byte{1}, AKPublic: []byte{1}},
		&ActivateCredentialArgs{Host: "compute-1", ChallengeID: "c", Secret: []byte{1}},
		&MeasurementsChangedArgs{Host: "compute-1"},
		&QuoteArgs{Nonce: nonce, PCRSelection: []int{0, 7, 10}},
		&RedeliveryWantedArgs{Host: "compute-1", LaunchID: testLaunch, InstanceID: testInstance},
	}
	for _, v := range ok {
		if err := v.Validate(); err != nil {
			t.Errorf("%T: %v", v, err)
		}
	}
}

func TestQuoteResultJSON(t *testing.T) {
	in := QuoteResult{Attest: []byte("a"), Signature: []byte("s"), PCRs: map[int][]byte{0: {1}, 10: {2}}, IMAOffset: 5}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"pcrs":{"0":"AQ==","10":"Ag=="}`) {
		t.Errorf("unexpected encoding %s", b)
	}
	var out QuoteResult
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestLaunchArgsValidate(t *testing.T) {
	good := func() *DeliverSecretArgs {
		return &DeliverSecretArgs{LaunchID: "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c",
			Blob:    ImportBlob{Public: []byte{1}, Duplicate: []byte{1}, InSymSeed: []byte{1}, Payload: []byte{1}, PCRs: []int{0, 7}},
			Receipt: json.RawMessage(`{"receipt":"r"}`)}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("valid args: %v", err)
	}
	approval := PolicyApproval{KID: "0123456789abcdef", PCRs: []int{0, 7}, PolicyDigest: make([]byte, 32), Signature: []byte{0x30}}
	withApproval := good()
	withApproval.Blob.AuthorizeKey = []byte{1}
	withApproval.Approvals = []PolicyApproval{approval}
	if err := withApproval.Validate(); err != nil {
		t.Fatalf("valid args with an approval (1.2): %v", err)
	}
	approve := func(mod func(ap *PolicyApproval)) func(a *DeliverSecretArgs) {
		return func(a *DeliverSecretArgs) {
			ap := approval
			ap.PCRs = []int{0, 7}
			mod(&ap)
			a.Approvals = []PolicyApproval{ap}
		}
	}
	for _, tc := range []struct {
		name string
		mod  func(a *DeliverSecretArgs)
	}{
		{"approval without kid", approve(func(ap *PolicyApproval) { ap.KID = "" })},
		{"approval digest short", approve(func(ap *PolicyApproval) { ap.PolicyDigest = ap.PolicyDigest[:31] })},
		{"approval without signature", approve(func(ap *PolicyApproval) { ap.Signature = nil })},
		{"approval huge signature", approve(func(ap *PolicyApproval) { ap.Signature = make([]byte, MaxApprovalSignature+1) })},
		{"approval unsorted pcrs", approve(func(ap *PolicyApproval) { ap.PCRs = []int{7, 0} })},
		{"too many approvals", func(a *DeliverSecretArgs) { a.Approvals = make([]PolicyApproval, MaxApprovals+1) }},
		{"huge authorize key", func(a *DeliverSecretArgs) { a.Blob.AuthorizeKey = make([]byte, MaxBlobPart+1) }},
		{"launch id", func(a *DeliverSecretArgs) { a.LaunchID = "l1" }},
		{"upper-case instance id", func(a *DeliverSecretArgs) { a.InstanceID = strings.ToUpper(a.InstanceID) }},
		{"path as instance id", func(a *DeliverSecretArgs) { a.InstanceID = "../../etc/passwd" }},
		{"no duplicate", func(a *DeliverSecretArgs) { a.Blob.Duplicate = nil }},
		{"huge payload", func(a *DeliverSecretArgs) { a.Blob.Payload = make([]byte, MaxBlobPart+1) }},
		{"no pcrs", func(a *DeliverSecretArgs) { a.Blob.PCRs = nil }},
		{"unsorted pcrs", func(a *DeliverSecretArgs) { a.Blob.PCRs = []int{7, 0} }},
		{"pcr 24", func(a *DeliverSecretArgs) { a.Blob.PCRs = []int{24} }},
		{"receipt not an object", func(a *DeliverSecretArgs) { a.Receipt = json.RawMessage(`"r"`) }},
		{"no receipt", func(a *DeliverSecretArgs) { a.Receipt = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := good()
			tc.mod(a)
			if err := a.Validate(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
	if err := (&InstancePresentArgs{InstanceID: "nope"}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("InstancePresentArgs{nope}.Validate = %v", err)
	}
	if err := (&InstancePresentArgs{InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c"}).Validate(); err != nil {
		t.Errorf("InstancePresentArgs.Validate = %v", err)
	}
}
