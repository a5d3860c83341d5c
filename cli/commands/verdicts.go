package commands

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/internal/verdict"
)

func (c *CLI) verdictCommand() *cobra.Command {
	g := c.groupCommand("verdict", "Signed verdicts, checked offline")
	g.AddCommand(c.verdictVerify())
	return g
}

// ErrVerify is returned when a verdict does not verify.
var ErrVerify = errors.New("verdict does not verify")

func (c *CLI) verdictVerify() *cobra.Command {
	var (
		keyFiles []string
		atFlag   string
	)
	cmd := &cobra.Command{
		Use:   "verify FILE --public-key PEM",
		Short: "Verify signed verdicts offline, with the rules the filter shim applies",
		Long: "Verify the signed verdicts in FILE (- for stdin) against pinned public keys, offline, with\n" +
			"the rules the scheduler's filter shim applies: the envelope is complete, its kid names a\n" +
			"pinned key, the Ed25519 signature covers the exact verdict bytes, and the verdict decodes\n" +
			"strictly and is well formed. The effective status is what the shim acts on: a verdict\n" +
			"past expires_at counts as unknown.\n\n" +
			"FILE holds one signed verdict ({\"verdict\", \"kid\", \"sig\"}) or any JSON containing them:\n" +
			"host show -f json --long output, the API's host body, a list. Pin the key from\n" +
			"'" + Name + " key list --use verdict --long -f value -c \"Public Key\"' (repeat --public-key during a\n" +
			"key rotation). Exits 1 when any verdict does not verify.",
		Args: cobra.ExactArgs(1),
	}
	of := listFlags(cmd, false)
	cmd.Flags().StringArrayVar(&keyFiles, "public-key", nil, "PEM file of a pinned public key (repeatable)")
	cmd.Flags().StringVar(&atFlag, "at", "", "judge expiry at this RFC 3339 time instead of now")
	_ = cmd.MarkFlagRequired("public-key")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		now := c.cfg.Now()
		if atFlag != "" {
			t, err := time.Parse(time.RFC3339Nano, atFlag)
			if err != nil {
				return usagef("--at %q is not an RFC 3339 time", atFlag)
			}
			now = t
		}
		var keys []ed25519.PublicKey
		for _, f := range keyFiles {
			b, err := c.readInput(f)
			if err != nil {
				return err
			}
			k, err := verdict.ParsePublicKeyPEM(b)
			if err != nil {
				return usagef("--public-key %s: %w", f, err)
			}
			keys = append(keys, k)
		}
		data, err := c.readInput(args[0])
		if err != nil {
			return err
		}
		envs, err := findSigned(data)
		if err != nil {
			return usagef("%s: %w", args[0], err)
		}
		vf := verdict.NewVerifier(keys...)
		results := make([]verified, len(envs))
		failed := 0
		for i, raw := range envs {
			results[i].v, results[i].err = vf.VerifyJSON(raw)
			if results[i].err != nil {
				failed++
			}
		}
		if len(results) == 1 && failed == 0 {
			if err := c.writeRecord(of, verdictRecord(results[0].v, now)); err != nil {
				return err
			}
		} else if len(results) > 1 {
			if err := c.writeList(of, verdictList(results, now)); err != nil {
				return err
			}
		}
		switch {
		case failed == 1 && len(results) == 1:
			return fmt.Errorf("%w: %w", ErrVerify, results[0].err)
		case failed > 0:
			return fmt.Errorf("%w: %d of %d verdicts", ErrVerify, failed, len(results))
		}
		return nil
	}
	return cmd
}

type verified struct {
	v   verdict.Verdict
	err error
}

func verdictRecord(v verdict.Verdict, now time.Time) output.Record {
	return output.Record{
		Fields: []output.Column{{Name: "host"}, {Name: "signature"}, {Name: "format"}, {Name: "status"}, {Name: "effective_status"},
			{Name: "profiles"}, {Name: "profile_versions"}, {Name: "reasons"}, {Name: "seq"}, {Name: "verified_at"}, {Name: "expires_at"},
			{Name: "evidence_digest"}, {Name: "issuer"}},
		Values: []any{v.Host, "valid", verdictFormat(v), string(v.Status), string(v.StatusAt(now)), v.Profiles, profileVersions(v), v.Reasons, v.Seq,
			v.VerifiedAt, v.ExpiresAt, v.EvidenceDigest, v.Issuer},
	}
}

// verdictFormat is v's wire format number (format 1 decodes as 0).
func verdictFormat(v verdict.Verdict) int {
	if v.Format == 0 {
		return verdict.Format1
	}
	return v.Format
}

// profileVersions is what a verdict says of the versions matched: nothing
// in format 1 (it cannot say), the map (maybe empty) in format 2.
func profileVersions(v verdict.Verdict) any {
	if v.Format != verdict.Format2 {
		return nil
	}
	return v.ProfileVersions
}

func verdictList(rs []verified, now time.Time) output.List {
	l := output.List{Columns: []output.Column{{Name: "Host"}, {Name: "Signature"}, {Name: "Status"}, {Name: "Effective Status"},
		{Name: "Profiles"}, {Name: "Profile Versions"}, {Name: "Seq"}, {Name: "Verified At"}, {Name: "Expires At"}}}
	for _, r := range rs {
		if r.err != nil {
			l.Rows = append(l.Rows, []any{nil, "invalid: " + r.err.Error(), nil, string(verdict.Unknown), nil, nil, nil, nil, nil})
			continue
		}
		v := r.v
		l.Rows = append(l.Rows, []any{v.Host, "valid", string(v.Status), string(v.StatusAt(now)), v.Profiles, profileVersions(v), v.Seq, v.VerifiedAt, v.ExpiresAt})
	}
	return l
}

// findSigned returns every signed-verdict envelope in a JSON document, as
// its raw bytes: any object with a "sig" key or a string "verdict" (an
// envelope missing parts must fail verification, not be skipped).
func findSigned(data []byte) ([]json.RawMessage, error) {
	var out []json.RawMessage
	var walk func(raw json.RawMessage, depth int) error
	walk = func(raw json.RawMessage, depth int) error {
		if depth > 32 {
			return errors.New("JSON nested too deeply")
		}
		raw = bytes.TrimSpace(raw)
		switch {
		case len(raw) > 0 && raw[0] == '{':
			var m map[string]json.RawMessage
			if err := json.Unmarshal(raw, &m); err != nil {
				return err
			}
			_, sig := m["sig"]
			v := bytes.TrimSpace(m["verdict"])
			if sig || (len(v) > 0 && v[0] == '"') {
				out = append(out, raw)
				return nil
			}
			for _, k := range slices.Sorted(maps.Keys(m)) {
				if err := walk(m[k], depth+1); err != nil {
					return err
				}
			}
		case len(raw) > 0 && raw[0] == '[':
			var l []json.RawMessage
			if err := json.Unmarshal(raw, &l); err != nil {
				return err
			}
			for _, e := range l {
				if err := walk(e, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if !json.Valid(data) {
		return nil, errors.New("not JSON")
	}
	if err := walk(data, 0); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New(`no signed verdict ({"verdict", "kid", "sig"}) in it`)
	}
	return out, nil
}
