package tpm

import (
	"context"

	"github.com/google/go-tpm/tpm2"
)

// QuoteBank quotes pcrs of bank alg with the AK, without reading PCR
// values: attack tests use it to produce quotes the agent never makes
// (SHA-1 only selections).
func (t *TPM) QuoteBank(ctx context.Context, nonce []byte, alg uint16, pcrs []int) (*Quote, error) {
	var q *Quote
	err := t.do(ctx, "quote bank", func(s *session) error {
		sel, err := pcrSelection(tpm2.TPMAlgID(alg), pcrs)
		if err != nil {
			return err
		}
		ak, err := t.loadAK(s)
		if err != nil {
			return err
		}
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      sel,
		}.Execute(s.tpm)
		if err != nil {
			return err
		}
		// A TPM without this bank still signs (an empty selection); its
		// values then cannot be read, which is what the attack sends.
		vals, _ := s.readPCRs(tpm2.TPMAlgID(alg), pcrs)
		q = &Quote{Attest: rsp.Quoted.Bytes(), Signature: tpm2.Marshal(rsp.Signature), PCRs: vals}
		return nil
	})
	return q, err
}
