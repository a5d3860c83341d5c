package cloud_test

import (
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// TestPlacementAgainstRealPlacement: every call and error the trait mirror
// branches on, against python3-placement.
func TestPlacementAgainstRealPlacement(t *testing.T) {
	pl := servicetest.Placement(t)
	pc := &gophercloud.ProviderClient{HTTPClient: http.Client{}}
	pc.SetToken(pl.Token)
	c, err := cloud.NewPlacement(pc, cloud.Endpoint{EndpointOverride: pl.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	rp := pl.CreateProvider(t, "compute-1")

	if _, _, err := c.ProviderTraits(ctx, "8a0dcd2e-3a8e-4e2e-9d5a-000000000000"); !errors.Is(err, cloud.ErrNotFound) {
		t.Errorf("traits of a missing provider: %v, want ErrNotFound", err)
	}
	gen, ts, err := c.ProviderTraits(ctx, rp)
	if err != nil || len(ts) != 0 {
		t.Fatalf("ProviderTraits = %d %v %v", gen, ts, err)
	}
	// An unknown custom trait is a 400.
	if _, err := c.SetProviderTraits(ctx, rp, gen, []string{"CUSTOM_NOT_CREATED"}); !errors.Is(err, cloud.ErrBadRequest) {
		t.Errorf("write of an unknown trait: %v, want ErrBadRequest", err)
	}
	for range 2 { // creating twice is fine
		if err := c.EnsureTrait(ctx, "CUSTOM_TRUSTPOOL_TRUSTED"); err != nil {
			t.Fatal(err)
		}
	}
	gen2, err := c.SetProviderTraits(ctx, rp, gen, []string{"CUSTOM_TRUSTPOOL_TRUSTED", "COMPUTE_NODE"})
	if err != nil || gen2 == gen {
		t.Fatalf("SetProviderTraits = %d, %v", gen2, err)
	}
	// The old generation is stale now.
	if _, err := c.SetProviderTraits(ctx, rp, gen, nil); !errors.Is(err, cloud.ErrConflict) {
		t.Errorf("write with a stale generation: %v, want ErrConflict", err)
	}
	if got, err := c.TraitsWithPrefix(ctx, "CUSTOM_TRUSTPOOL_"); err != nil || !slices.Equal(got, []string{"CUSTOM_TRUSTPOOL_TRUSTED"}) {
		t.Errorf("TraitsWithPrefix = %v, %v", got, err)
	}
	if got, err := c.ProvidersWithTrait(ctx, "CUSTOM_TRUSTPOOL_TRUSTED"); err != nil || !slices.Equal(got, []string{rp}) {
		t.Errorf("ProvidersWithTrait = %v, %v", got, err)
	}
	if got, err := c.ProvidersNamed(ctx, "compute-1"); err != nil || len(got) != 1 || got[0].UUID != rp || got[0].Root != rp {
		t.Errorf("ProvidersNamed = %+v, %v", got, err)
	}
	if got, err := c.AllProviders(ctx); err != nil || len(got) != 1 {
		t.Errorf("AllProviders = %+v, %v", got, err)
	}
	// A wrong token is refused with the status, no body.
	pc.SetToken("")
	if _, _, err := c.ProviderTraits(ctx, rp); err == nil || errors.Is(err, cloud.ErrNotFound) {
		t.Errorf("without a token: %v", err)
	}
}
