package commands

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/verdict"
)

func (c *CLI) keyCommand() *cobra.Command {
	g := c.groupCommand("key", "The service's public keys (pin them to verify verdicts and receipts, and to seal launch secrets)")
	g.AddCommand(c.keyList())
	return g
}

// Key uses.
const (
	useVerdict = "verdict"
	useLaunch  = "launch"
)

func (c *CLI) keyList() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the service's public keys with their fingerprints (--long: the PEM)",
		Long: "List the service's public keys: the verdict key (it signs verdicts and launch receipts; key\n" +
			"id, algorithm and SHA-256 fingerprint of the raw public key) and the launch key tenants seal\n" +
			"launch secrets to (key id, HPKE suite and fingerprint: SHA-256 of its KEM id and public key,\n" +
			"what 'launch create --launch-key-fingerprint' pins). --long adds the PEM to pin, e.g.\n\n" +
			"  " + Name + " key list --long -f value -c \"Public Key\" --use verdict > verdict-key.pem\n\n" +
			"The keys are public: no credentials are needed with --os-attestation-url.",
		Args: cobra.NoArgs,
	}
	of := listFlags(cmd, true)
	var use string
	cmd.Flags().StringVar(&use, "use", "", "only the keys of this use: verdict or launch")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if use != "" && use != useVerdict && use != useLaunch {
			return usagef("--use %q is not verdict or launch", use)
		}
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
			if use != useLaunch {
				l.Rows = append(l.Rows, []any{useVerdict, k.KID, k.Algorithm, fp, k.PublicKeyPEM})
			}
		}
		for _, k := range keys.LaunchKeys {
			fp := "(not a launch key this client knows)"
			if pub, err := launch.ParsePublicKey(k.KEMID, k.PublicKey); err == nil {
				fp = pub.Fingerprint()
				if pub.KID() != k.KID || fp != k.Fingerprint {
					fp = "(key id or fingerprint does not match the key)"
				}
			}
			if use != useVerdict {
				l.Rows = append(l.Rows, []any{useLaunch, k.KID, k.Suite, fp, k.PublicKeyPEM})
			}
		}
		return c.writeList(of, l)
	}
	return cmd
}
