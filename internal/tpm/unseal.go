package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/importblob"
)

// Unseal errors, for the agent's reason codes.
var (
	// ErrPolicy: the TPM refused to unseal under the PCR policy: a PCR in
	// the selection no longer has the value the blob was sealed to.
	ErrPolicy = errors.New("PCR policy not satisfied")
	// ErrImport: the TPM refused the blob (made for another EK, or
	// altered).
	ErrImport = errors.New("TPM refused the import blob")
	// ErrNotApproved: the blob is sealed under PolicyAuthorize and no
	// approval names the TPM's current PCR values.
	ErrNotApproved = errors.New("current PCR values not approved")
	// ErrApproval: the TPM refused the approval's signature
	// (TPM2_VerifySignature): the policy-signing key did not make it.
	ErrApproval = errors.New("TPM refused the approval's signature")
)

// Unseal imports a sealed-data object (package importblob) under the
// endorsement key the agent enrolled with, loads it and unseals it in a
// policy session that runs TPM2_PolicyPCR over the blob's PCR selection
// with the TPM's current PCR values. It returns the sealed key, which the
// caller wipes after use. A PCR that moved since sealing makes the unseal
// fail with ErrPolicy; a blob not made for this TPM fails with ErrImport.
// Every object it loads is flushed before it returns.
//
// A blob sealed under TPM2_PolicyAuthorize (p.AuthorizeKey set) needs an
// approval of the current PCR state: after PolicyPCR the session's digest
// picks the approval (none: ErrNotApproved), the TPM checks its signature
// with the policy-signing key loaded from the blob (TPM2_LoadExternal, owner
// hierarchy so that the ticket is usable; refused: ErrApproval), and
// TPM2_PolicyAuthorize turns the session into the blob's authPolicy. A
// key other than the one the blob was sealed to leads to another
// authPolicy, which the TPM refuses at unseal (ErrPolicy).
func (t *TPM) Unseal(ctx context.Context, p *importblob.Parsed, approvals []attestrpc.PolicyApproval) ([]byte, error) {
	var key []byte
	err := t.do(ctx, "unseal", func(s *session) error {
		spec, _, err := s.chooseEK(t.cfg.EKAlgorithm)
		if err != nil {
			return err
		}
		ek, err := s.loadEK(spec)
		if err != nil {
			return err
		}
		imp, err := tpm2.Import{
			ParentHandle: tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: ekAuth(&ek.public)},
			ObjectPublic: tpm2.New2B(p.Public),
			Duplicate:    tpm2.TPM2BPrivate{Buffer: p.Duplicate},
			InSymSeed:    tpm2.TPM2BEncryptedSecret{Buffer: p.InSymSeed},
			Symmetric:    tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(s.tpm)
		if err != nil {
			return fmt.Errorf("%w: import: %w", ErrImport, err)
		}
		ld, err := tpm2.Load{
			ParentHandle: tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: ekAuth(&ek.public)},
			InPrivate:    imp.OutPrivate,
			InPublic:     tpm2.New2B(p.Public),
		}.Execute(s.tpm)
		if err != nil {
			return fmt.Errorf("%w: load: %w", ErrImport, err)
		}
		s.track(ld.ObjectHandle)
		sel := importblob.Selection(p.PCRs)
		var authorize func(tp transport.TPM, h tpm2.TPMISHPolicy) error
		if p.AuthorizeKey != nil {
			le, err := tpm2.LoadExternal{InPublic: tpm2.New2B(*p.AuthorizeKey), Hierarchy: tpm2.TPMRHOwner}.Execute(s.tpm)
			if err != nil {
				return fmt.Errorf("%w: load the policy-signing key: %w", ErrApproval, err)
			}
			s.track(le.ObjectHandle)
			authorize = func(tp transport.TPM, h tpm2.TPMISHPolicy) error {
				return policyAuthorize(tp, h, tpm2.NamedHandle{Handle: le.ObjectHandle, Name: le.Name}, p.PCRs, approvals)
			}
		}
		pcrPolicy := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) (err error) {
			// go-tpm does not flush a session whose policy fails; swtpm
			// has three session slots.
			defer func() {
				if err != nil {
					_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(tp)
				}
			}()
			// An empty PCR digest makes the TPM use its current values.
			if _, err := (tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}).Execute(tp); err != nil {
				return err
			}
			if authorize != nil {
				return authorize(tp, h)
			}
			return nil
		})
		rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: ld.ObjectHandle, Name: ld.Name, Auth: pcrPolicy}}.Execute(s.tpm)
		switch {
		case errors.Is(err, ErrNotApproved), errors.Is(err, ErrApproval), errors.Is(err, ErrPolicy):
			return err
		case errors.Is(err, tpm2.TPMRCPolicyFail):
			return fmt.Errorf("%w: %w", ErrPolicy, err)
		case err != nil:
			return fmt.Errorf("unseal: %w", err)
		}
		key = rsp.OutData.Buffer
		return nil
	})
	return key, err
}

// policyAuthorize continues a policy session that has run PolicyPCR: it
// picks the approval of the session's digest, has the TPM verify its
// signature with key and runs TPM2_PolicyAuthorize with the ticket.
func policyAuthorize(tp transport.TPM, h tpm2.TPMISHPolicy, key tpm2.NamedHandle, pcrs []int, approvals []attestrpc.PolicyApproval) error {
	gd, err := tpm2.PolicyGetDigest{PolicySession: h}.Execute(tp)
	if err != nil {
		return fmt.Errorf("policy digest: %w", err)
	}
	var ap *attestrpc.PolicyApproval
	for i := range approvals {
		if slices.Equal(approvals[i].PCRs, pcrs) && bytes.Equal(approvals[i].PolicyDigest, gd.PolicyDigest.Buffer) {
			ap = &approvals[i]
			break
		}
	}
	if ap == nil {
		return fmt.Errorf("%w: %d approvals, none of PCRs %v as they are", ErrNotApproved, len(approvals), pcrs)
	}
	sig, err := importblob.ApprovalSignature(ap.Signature)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrApproval, err)
	}
	vs, err := tpm2.VerifySignature{KeyHandle: key, Digest: tpm2.TPM2BDigest{Buffer: importblob.ApprovalDigest(ap.PolicyDigest)}, Signature: sig}.Execute(tp)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrApproval, err)
	}
	_, err = tpm2.PolicyAuthorize{PolicySession: h, ApprovedPolicy: tpm2.TPM2BDigest{Buffer: ap.PolicyDigest},
		PolicyRef: tpm2.TPM2BDigest{Buffer: importblob.PolicyRef}, KeySign: key.Name, CheckTicket: vs.Validation}.Execute(tp)
	if err != nil {
		return fmt.Errorf("%w: policy authorize: %w", ErrPolicy, err)
	}
	return nil
}
