package apidoc_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/attestapi/apidoc"
	"github.com/trustpool/trustpool/internal/attestapi/attestapitest"
)

var update = flag.Bool("update", false, "rewrite docs/api/README.md from the document")

// Page is the rendered page's path from the repository root.
const Page = "docs/api/README.md"

// TestAPIPageUpToDate: docs/api/README.md is what the generator makes of
// docs/api/openapi.yaml (make api-docs rewrites it), and names every
// operation.
func TestAPIPageUpToDate(t *testing.T) {
	doc := attestapitest.Load(t)
	got := apidoc.Render(doc)
	path := filepath.Join(attestapitest.RepoRoot(t), Page)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s is out of date with %s; run make api-docs (-file +generated):\n%s", Page, apidoc.Source, diff)
	}
	for _, op := range attestapitest.Operations(doc) {
		if !strings.Contains(string(got), "`"+op.Method+" "+op.Path+"`") {
			t.Errorf("the page lacks %s", op)
		}
	}
}
