package cloud_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
)

// TestServer: GET /servers/{id} at the pinned microversion, read into
// where the server runs and whose it is; 404 is ErrNotFound, other
// failures are not.
func TestServer(t *testing.T) {
	const id = "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("X-OpenStack-Nova-API-Version"); v != cloud.ComputeMicroversion {
			t.Errorf("microversion %q", v)
		}
		switch r.URL.Path {
		case "/v2.1/servers/" + id:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"server": {"id": "` + id + `", "tenant_id": "p1", "hostId": "abc",
				"OS-EXT-SRV-ATTR:host": "compute-1", "name": "vm", "status": "ACTIVE", "flavor": {"original_name": "m1"}}}`))
		case "/v2.1/servers/missing":
			http.Error(w, `{"itemNotFound": {"code": 404, "message": "Instance missing could not be found."}}`, http.StatusNotFound)
		default:
			http.Error(w, "boom", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	pc := &gophercloud.ProviderClient{HTTPClient: *srv.Client()}
	c, err := cloud.NewCompute(pc, cloud.Endpoint{EndpointOverride: srv.URL + "/v2.1"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Server(t.Context(), id)
	if err != nil || *s != (cloud.Server{ID: id, ProjectID: "p1", Host: "compute-1", HostID: "abc"}) {
		t.Fatalf("Server = %+v, %v", s, err)
	}
	if _, err := c.Server(t.Context(), "missing"); !errors.Is(err, cloud.ErrNotFound) {
		t.Errorf("missing server: %v, want ErrNotFound", err)
	}
	if _, err := c.Server(t.Context(), "broken"); err == nil || errors.Is(err, cloud.ErrNotFound) {
		t.Errorf("500: %v, want an error that is not ErrNotFound", err)
	}
}
