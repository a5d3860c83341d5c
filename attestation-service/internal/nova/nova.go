// Package nova asks Nova's API where a server runs (its compute host and
// project) with the service's own credentials. (Nova's instance
// notifications are package novanotify's.)
//
// Nothing Nova says is trusted: a trusted launch uses the host it names
// only to know which agent to ask, and that agent checks on the host that
// the instance runs there before any secret is sealed to its TPM.
//
// Without [nova] credentials (a third party runs the service and has no
// Nova account) there is no API client; launches then name the host by the
// hostId the tenant sees (sha224(project_id + host), package launch's
// HostID).
package nova

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/trustpool/trustpool/keystone-auth/credentials"
)

// Errors.
var (
	// ErrNoServer: Nova has no such server (or does not show it to us).
	ErrNoServer = errors.New("no such server")
	// ErrUnavailable: Nova could not be asked.
	ErrUnavailable = errors.New("nova unavailable")
)

// Server is what the service needs to know about a server.
type Server struct {
	ID        string
	ProjectID string
	// Host is the compute service host name (OS-EXT-SRV-ATTR:host), which
	// is the agent's host name.
	Host string
	// HostID is what Nova shows tenants.
	HostID string
}

// Client asks Nova's API.
type Client struct {
	sc *gophercloud.ServiceClient
}

// Dial authenticates to Keystone with the [nova] options (keystoneauth's
// names, as nova.conf's [neutron] section has them) and finds the compute
// endpoint in the catalog, unless endpointOverride names it.
func Dial(ctx context.Context, opts credentials.Options, endpointOverride string) (*Client, error) {
	p, err := credentials.New(ctx, credentials.Config{Options: opts, UserAgent: "trustpool-attestation"})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var sc *gophercloud.ServiceClient
	if endpointOverride != "" {
		sc = &gophercloud.ServiceClient{ProviderClient: p.ProviderClient(), Endpoint: gophercloud.NormalizeURL(endpointOverride), Type: "compute"}
		sc.ResourceBase = sc.Endpoint
	} else if sc, err = openstack.NewComputeV2(p.ProviderClient(), p.EndpointOpts()); err != nil {
		return nil, fmt.Errorf("%w: find the compute endpoint: %w", ErrUnavailable, err)
	}
	return &Client{sc: sc}, nil
}

// Server returns where a server runs. A server Nova does not know wraps
// ErrNoServer; other failures wrap ErrUnavailable.
func (c *Client) Server(ctx context.Context, id string) (*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := servers.Get(ctx, c.sc, id).Extract()
	if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return nil, fmt.Errorf("server %s: %w", id, ErrNoServer)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: server %s: %w", ErrUnavailable, id, err)
	}
	return &Server{ID: s.ID, ProjectID: s.TenantID, Host: s.Host, HostID: s.HostID}, nil
}
