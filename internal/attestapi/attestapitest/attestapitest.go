// Package attestapitest holds the attestation API to its OpenAPI document
// (docs/api/openapi.yaml) in tests: it loads and validates the document with
// kin-openapi, lists its operations, and runs a validating proxy that sits
// between a client (the trustpool CLI, a test) and a real service and checks
// every request and every answer against the document's schemas, status
// codes and headers, recording which operations were exercised.
//
// It is test support: nothing in a deployable imports it.
package attestapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// DocPath is the document's path from the repository root.
const DocPath = "docs/api/openapi.yaml"

func init() {
	// Profile files travel as text.
	openapi3filter.RegisterBodyDecoder("application/toml", func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(r)
		return string(b), err
	})
}

// RepoRoot returns the repository root (the directory of go.mod), found
// from the working directory upwards.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("attestapitest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Load reads and validates the document.
func Load(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := LoadFile(filepath.Join(RepoRoot(t), DocPath))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// LoadFile reads a document and validates it (OpenAPI 3.1 rules, examples
// included).
func LoadFile(path string) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("%s is not a valid OpenAPI document: %w", path, err)
	}
	return doc, nil
}

// Operation is one method on one path of the document.
type Operation struct {
	Method, Path, ID string
}

func (o Operation) String() string { return o.Method + " " + o.Path }

// Operations lists the document's operations, sorted by path and method.
func Operations(doc *openapi3.T) []Operation {
	var ops []Operation
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops = append(ops, Operation{Method: method, Path: path, ID: op.OperationID})
		}
	}
	slices.SortFunc(ops, func(a, b Operation) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Method, b.Method)
	})
	return ops
}

// Validator checks exchanges against the document.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
}

// NewValidator returns a validator of the repository's document.
func NewValidator(t testing.TB) *Validator {
	t.Helper()
	doc := Load(t)
	// Match any host: the service listens wherever the test put it.
	doc.Servers = nil
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &Validator{doc: doc, router: r}
}

// Doc is the document.
func (v *Validator) Doc() *openapi3.T { return v.doc }

// ErrNoRoute is returned when the document has no operation for a request.
var ErrNoRoute = errors.New("no operation in the document")

// Route finds the request's operation.
func (v *Validator) Route(req *http.Request) (*routers.Route, map[string]string, error) {
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w for %s %s: %w", ErrNoRoute, req.Method, req.URL.Path, err)
	}
	return route, params, nil
}

func (v *Validator) input(req *http.Request, body []byte, route *routers.Route, params map[string]string) *openapi3filter.RequestValidationInput {
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	return &openapi3filter.RequestValidationInput{
		Request: r, PathParams: params, Route: route,
		Options: &openapi3filter.Options{
			AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
			IncludeResponseStatus: true,
			MultiError:            true,
		},
	}
}

// CheckRequest validates a request (with its body) against its operation.
func (v *Validator) CheckRequest(req *http.Request, body []byte) error {
	route, params, err := v.Route(req)
	if err != nil {
		return err
	}
	// OpenAPI lets a request carry undeclared query parameters; the service
	// refuses them, so the document must declare every one a client sends.
	declared := map[string]bool{}
	for _, ps := range []openapi3.Parameters{route.PathItem.Parameters, route.Operation.Parameters} {
		for _, p := range ps {
			if p.Value != nil && p.Value.In == openapi3.ParameterInQuery {
				declared[p.Value.Name] = true
			}
		}
	}
	var errs []error
	for k := range req.URL.Query() {
		if !declared[k] {
			errs = append(errs, fmt.Errorf("query parameter %q is not declared", k))
		}
	}
	if err := openapi3filter.ValidateRequest(req.Context(), v.input(req, body, route, params)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckResponse validates an answer against the operation of its request:
// the status must be documented, and the body and headers must match.
// Answers to requests the document has no operation for (405, 404 of
// unknown paths) must still be the error envelope.
func (v *Validator) CheckResponse(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	route, params, err := v.Route(req)
	if err != nil {
		if status != http.StatusMethodNotAllowed && status != http.StatusNotFound && status != http.StatusUnauthorized {
			return err
		}
		return v.checkErrorEnvelope(status, header, body)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: v.input(req, reqBody, route, params),
		Status:                 status, Header: header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		return fmt.Errorf("%s %s → %d: %w", req.Method, req.URL.Path, status, err)
	}
	return nil
}

// checkErrorEnvelope validates an error answer that no operation covers.
func (v *Validator) checkErrorEnvelope(status int, header http.Header, body []byte) error {
	ref := v.doc.Components.Schemas["ErrorEnvelope"]
	if ref == nil {
		return errors.New("the document has no ErrorEnvelope schema")
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("%d answer is %q, not the JSON error envelope", status, ct)
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return fmt.Errorf("%d answer: %w", status, err)
	}
	if err := ref.Value.VisitJSON(value, openapi3.EnableJSONSchema2020()); err != nil {
		return fmt.Errorf("%d answer is not the error envelope: %w", status, err)
	}
	return nil
}

// Exchange is one request seen by a Proxy.
type Exchange struct {
	Method, Path string
	// Operation is "METHOD /path/template" ("" when none matched).
	Operation string
	Status    int
	// RequestErr and ResponseErr are the validation failures.
	RequestErr, ResponseErr error
}

// Proxy forwards to a service and validates every exchange.
type Proxy struct {
	URL string
	v   *Validator

	mu        sync.Mutex
	exchanges []Exchange
}

// NewProxy starts a validating proxy in front of target (the service's
// base URL); it stops with the test.
func NewProxy(t testing.TB, v *Validator, target string) *Proxy {
	t.Helper()
	tu, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{v: v}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqBody, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host = tu.Scheme, tu.Host
		out.Host = tu.Host
		out.Body = io.NopCloser(bytes.NewReader(reqBody))
		out.ContentLength = int64(len(reqBody))
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		ex := Exchange{Method: r.Method, Path: r.URL.Path, Status: resp.StatusCode}
		if route, _, err := v.Route(r); err == nil {
			ex.Operation = route.Method + " " + route.Path
		}
		ex.RequestErr = v.CheckRequest(r, reqBody)
		ex.ResponseErr = v.CheckResponse(r, reqBody, resp.StatusCode, resp.Header, body)
		p.mu.Lock()
		p.exchanges = append(p.exchanges, ex)
		p.mu.Unlock()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Exchanges returns what the proxy has seen so far.
func (p *Proxy) Exchanges() []Exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.exchanges)
}

// Check fails t for every invalid request or answer seen so far, and
// returns the number of exchanges.
func (p *Proxy) Check(t testing.TB) int {
	t.Helper()
	exs := p.Exchanges()
	for _, ex := range exs {
		if ex.RequestErr != nil {
			t.Errorf("request not in the document: %s %s: %v", ex.Method, ex.Path, ex.RequestErr)
		}
		if ex.ResponseErr != nil {
			t.Errorf("answer not in the document: %v", ex.ResponseErr)
		}
	}
	return len(exs)
}

// Uncovered returns the document's operations (and, with statuses, the
// documented status codes among them) that no exchange exercised.
func (p *Proxy) Uncovered() []Operation {
	seen := map[string]bool{}
	for _, ex := range p.Exchanges() {
		seen[ex.Operation] = true
	}
	var out []Operation
	for _, op := range Operations(p.v.doc) {
		if !seen[op.Method+" "+op.Path] {
			out = append(out, op)
		}
	}
	return out
}
