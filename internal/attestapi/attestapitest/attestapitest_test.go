package attestapitest

import (
	"testing"
)

// TestDocumentValid: the document loads and passes kin-openapi's OpenAPI
// 3.1 validation, and every operation has an id, a summary and a tag.
func TestDocumentValid(t *testing.T) {
	doc := Load(t)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	ops := Operations(doc)
	if len(ops) < 20 {
		t.Fatalf("%d operations: %v", len(ops), ops)
	}
	ids := map[string]bool{}
	for _, op := range ops {
		o := doc.Paths.Value(op.Path).GetOperation(op.Method)
		if o.OperationID == "" || o.Summary == "" || len(o.Tags) == 0 {
			t.Errorf("%s lacks an operationId, summary or tag", op)
		}
		if ids[o.OperationID] {
			t.Errorf("%s: operationId %q used twice", op, o.OperationID)
		}
		ids[o.OperationID] = true
	}
}
