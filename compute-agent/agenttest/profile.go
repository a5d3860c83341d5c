package agenttest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/simtpm"
)

// IMAFiles returns n files for hosts to "run" (/usr/bin/sim-tool-N with
// distinct contents), to list in a profile's allowlist.
func IMAFiles(n int) []bootseed.IMAFile {
	out := make([]bootseed.IMAFile, n)
	for i := range out {
		out[i] = bootseed.IMAFile{Path: fmt.Sprintf("/usr/bin/sim-tool-%d", i), Content: []byte(fmt.Sprintf("simulated tool %d", i))}
	}
	return out
}

// Profile returns a profile (TOML, for POST /v1/profiles/import) that the
// fleet's hosts pass while untouched: PCRs 0-9 pinned to boot's values,
// Secure Boot on, and IMA appraised against files.
func Profile(name string, boot *simtpm.Boot, files []bootseed.IMAFile) (string, error) {
	tp, err := simtpm.New(simtpm.Config{Rand: rand.Reader, Boot: boot})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[[profile]]\nname = %q\ndescription = \"simulated fleet (simulated TPMs)\"\n", name)
	b.WriteString("[profile.facts]\nsecure_boot = [\"enabled\"]\n[profile.pcrs]\n")
	for i := range 10 {
		fmt.Fprintf(&b, "%d = [%q]\n", i, hex.EncodeToString(tp.PCR(i)))
	}
	b.WriteString("[profile.ima]\nallow_violations = false\n[profile.ima.allowlist]\n")
	lines := make([]string, 0, len(files))
	for _, f := range files {
		lines = append(lines, fmt.Sprintf("%q = [\"sha256:%s\"]\n", f.Path, hex.EncodeToString(eventlog.SHA256.Sum(f.Content))))
	}
	sort.Strings(lines)
	for _, l := range lines {
		b.WriteString(l)
	}
	return b.String(), nil
}
