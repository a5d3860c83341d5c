package commands

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/internal/verdict"
)

func (c *CLI) keyCommand() *cobra.Command {
	g := c.groupCommand("key", "The service's public keys (pin them to verify verdicts)")
	g.AddCommand(c.keyList())
	return g
}

// Key uses.
const useVerdict = "verdict"

func (c *CLI) keyList() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the service's public keys with their fingerprints (--long: the PEM)",
		Long: "List the service's public keys: key id, algorithm and SHA-256 fingerprint of the raw\n" +
			"public key; --long adds the PEM to pin, e.g.\n\n" +
			"  " + Name + " key list --long -f value -c \"Public Key\" > verdict-key.pem\n\n" +
			"The keys are public: no credentials are needed with --os-attestation-url.",
		Args: cobra.NoArgs,
	}
	of := listFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cl, err := c.client(cmd.Context(), false)
		if err != nil {
			return err
		}
		keys, err := cl.Keys(cmd.Context())
		if err != nil {
			return err
		}
		l := output.List{Columns: []output.Column{{Name: "Use"}, {Name: "Key ID"}, {Name: "Algorithm"}, {Name: "Fingerprint"},
			{Name: "Public Key", Long: true}}}
		for _, k := range keys.VerdictKeys {
			fp := ""
			if pub, err := verdict.ParsePublicKeyPEM([]byte(k.PublicKeyPEM)); err == nil {
				sum := sha256.Sum256(pub)
				fp = hex.EncodeToString(sum[:])
				if verdict.KeyID(pub) != k.KID {
					fp = "(key id does not match the key)"
				}
			}
			l.Rows = append(l.Rows, []any{useVerdict, k.KID, k.Algorithm, fp, k.PublicKeyPEM})
		}
		return c.writeList(of, l)
	}
	return cmd
}
