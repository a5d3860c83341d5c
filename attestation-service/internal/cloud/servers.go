package cloud

import (
	"context"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// Server is what a trusted launch needs to know of a server. Nothing Nova
// says is trusted: the launch uses Host only to know which agent to ask,
// and that agent checks on the host that the instance runs there before
// any secret is sealed to its TPM.
type Server struct {
	ID        string
	ProjectID string
	// Host is the nova-compute service host (OS-EXT-SRV-ATTR:host, shown to
	// administrators), which is the agent's host name; empty before the
	// server is scheduled or while it is shelved.
	Host string
	// HostID is what Nova shows tenants: sha224(project id + host).
	HostID string
}

// Server returns where a server runs and whose it is (GET /servers/{id}).
// A server Nova does not know, or does not show the service user, wraps
// ErrNotFound.
func (c *Compute) Server(ctx context.Context, id string) (*Server, error) {
	ctx, cancel := bound(ctx, c.timeout)
	defer cancel()
	s, err := servers.Get(ctx, c.c, id).Extract()
	if err != nil {
		return nil, apiError("show server "+id, err)
	}
	return &Server{ID: s.ID, ProjectID: s.TenantID, Host: s.Host, HostID: s.HostID}, nil
}
