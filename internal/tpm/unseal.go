package tpm

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

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
)

// Unseal imports a sealed-data object (package importblob) under the
// endorsement key the agent enrolled with, loads it and unseals it in a
// policy session that runs TPM2_PolicyPCR over the blob's PCR selection
// with the TPM's current PCR values. It returns the sealed key, which the
// caller wipes after use. A PCR that moved since sealing makes the unseal
// fail with ErrPolicy; a blob not made for this TPM fails with ErrImport.
// Every object it loads is flushed before it returns.
func (t *TPM) Unseal(ctx context.Context, p *importblob.Parsed) ([]byte, error) {
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
		pcrPolicy := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
			// An empty PCR digest makes the TPM use its current values.
			_, err := tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}.Execute(tp)
			return err
		})
		rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: ld.ObjectHandle, Name: ld.Name, Auth: pcrPolicy}}.Execute(s.tpm)
		if errors.Is(err, tpm2.TPMRCPolicyFail) {
			return fmt.Errorf("%w: %w", ErrPolicy, err)
		}
		if err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
		key = rsp.OutData.Buffer
		return nil
	})
	return key, err
}
