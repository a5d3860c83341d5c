// Package cloud is the attestation service's one place for the OpenStack
// APIs it acts through, with gophercloud v2 and the service user's Keystone
// session (keystone-auth/credentials): Placement (resource provider traits,
// custom traits, providers by name or trait) and Nova (compute nodes of a
// service host, nova-compute services and their enable/disable state).
//
// Each client does exactly the calls its consumers need and pins the
// microversion those calls were written for: Placement 1.23 (traits since
// 1.6, the required filter since 1.18, error codes since 1.23) and Nova 2.53
// (service and hypervisor ids are UUIDs; hypervisor ids are the compute
// nodes' resource provider UUIDs). Consumers declare the small interface
// they use (package traits, package revocation), so each action can be
// switched off by configuration or replaced in tests.
//
// Errors wrap the sentinels below for branching and name the operation;
// they carry the HTTP status and Placement's error code, never response
// bodies or tokens. The package does not log.
package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
)

// Microversions the clients speak.
const (
	PlacementMicroversion = "1.23"
	ComputeMicroversion   = "2.53"
)

// Errors for callers to branch on.
var (
	// ErrNotFound: the provider, trait or service does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: Placement refused a write made with a stale provider
	// generation (placement.concurrent_update); read again and retry.
	ErrConflict = errors.New("resource provider generation conflict")
	// ErrBadRequest: the API refused the request (400), e.g. a trait that
	// does not exist.
	ErrBadRequest = errors.New("request refused")
	// ErrNoEndpoint: the service is not in the catalog and no
	// endpoint_override is set.
	ErrNoEndpoint = errors.New("no endpoint")
)

// Endpoint selects a service's endpoint: endpoint_override, else the
// Keystone catalog entry of the service type in RegionName for the first of
// ValidInterfaces the catalog has (keystoneauth's adapter options).
type Endpoint struct {
	RegionName       string
	ValidInterfaces  []string
	EndpointOverride string
	// Timeout bounds each request (0: only the caller's context does).
	Timeout time.Duration
}

// bound applies a request timeout to ctx.
func bound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// serviceClient builds a gophercloud service client of type typ.
func serviceClient(pc *gophercloud.ProviderClient, ep Endpoint, typ string, newClient func(*gophercloud.ProviderClient, gophercloud.EndpointOpts) (*gophercloud.ServiceClient, error)) (*gophercloud.ServiceClient, error) {
	if ep.EndpointOverride != "" {
		return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: gophercloud.NormalizeURL(ep.EndpointOverride), Type: typ}, nil
	}
	ifaces := ep.ValidInterfaces
	if len(ifaces) == 0 {
		ifaces = []string{"internal", "public"}
	}
	var errs []error
	for _, iface := range ifaces {
		sc, err := newClient(pc, gophercloud.EndpointOpts{Region: ep.RegionName, Availability: gophercloud.Availability(iface)})
		if err == nil {
			return sc, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%s endpoint (region %q, interfaces %s): %w: %w", typ, ep.RegionName, strings.Join(ifaces, ","), ErrNoEndpoint, errors.Join(errs...))
}

// NewPlacement returns a Placement client on the provider's session.
func NewPlacement(pc *gophercloud.ProviderClient, ep Endpoint) (*Placement, error) {
	sc, err := serviceClient(pc, ep, "placement", openstack.NewPlacementV1)
	if err != nil {
		return nil, err
	}
	sc.Microversion = PlacementMicroversion
	return &Placement{c: sc, timeout: ep.Timeout}, nil
}

// NewCompute returns a Nova client on the provider's session.
func NewCompute(pc *gophercloud.ProviderClient, ep Endpoint) (*Compute, error) {
	sc, err := serviceClient(pc, ep, "compute", openstack.NewComputeV2)
	if err != nil {
		return nil, err
	}
	sc.Microversion = ComputeMicroversion
	return &Compute{c: sc, timeout: ep.Timeout}, nil
}

// apiError turns a gophercloud error into one of ours: the operation, the
// status, Placement's error code when there is one, and a sentinel.
func apiError(op string, err error) error {
	var uc gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &uc) {
		return fmt.Errorf("%s: %w", op, err)
	}
	code := errorCode(uc.Body)
	detail := fmt.Sprintf("HTTP %d", uc.Actual)
	if code != "" {
		detail += " " + code
	}
	switch uc.Actual {
	case http.StatusNotFound:
		return fmt.Errorf("%s: %s: %w", op, detail, ErrNotFound)
	case http.StatusConflict:
		if code == "" || code == "placement.concurrent_update" {
			return fmt.Errorf("%s: %s: %w", op, detail, ErrConflict)
		}
	case http.StatusBadRequest:
		return fmt.Errorf("%s: %s: %w", op, detail, ErrBadRequest)
	}
	return fmt.Errorf("%s: %s", op, detail)
}

// errorCode reads errors[0].code of an OpenStack error document.
func errorCode(body []byte) string {
	var doc struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &doc) != nil || len(doc.Errors) == 0 {
		return ""
	}
	c := doc.Errors[0].Code
	if len(c) > 64 {
		c = c[:64]
	}
	return c
}
