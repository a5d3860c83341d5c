package cloud

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/services"
)

// Compute talks to the Nova API.
type Compute struct {
	c       *gophercloud.ServiceClient
	timeout time.Duration
}

// Node is a compute node: its hypervisor hostname and UUID, which is its
// resource provider's UUID in Placement.
type Node struct {
	Name string
	UUID string
}

// hypervisorPage is the part of GET /os-hypervisors/detail (2.53) we read.
type hypervisorPage struct {
	Hypervisors []struct {
		ID       string `json:"id"`
		Hostname string `json:"hypervisor_hostname"`
		Service  struct {
			Host string `json:"host"`
		} `json:"service"`
	} `json:"hypervisors"`
	Links []struct {
		Rel string `json:"rel"`
	} `json:"hypervisors_links"`
}

// nodePageSize is the page size asked for (Nova caps it at its
// [api] max_limit, 1000 by default).
const nodePageSize = 1000

// Nodes returns the compute nodes of every nova-compute service host, by
// service host. A host has several nodes with Ironic or other drivers that
// manage more than one node.
func (c *Compute) Nodes(ctx context.Context) (map[string][]Node, error) {
	ctx, cancel := bound(ctx, c.timeout)
	defer cancel()
	out := map[string][]Node{}
	marker := ""
	for range 100000 {
		q := url.Values{"limit": {strconv.Itoa(nodePageSize)}}
		if marker != "" {
			q.Set("marker", marker)
		}
		var page hypervisorPage
		resp, err := c.c.Get(ctx, c.c.ServiceURL("os-hypervisors", "detail")+"?"+q.Encode(), &page, nil)
		if resp != nil {
			resp.Body.Close() // gophercloud has read it into page
		}
		if err != nil {
			return nil, apiError("list compute nodes", err)
		}
		for _, h := range page.Hypervisors {
			if h.ID == "" || h.Service.Host == "" {
				continue
			}
			out[h.Service.Host] = append(out[h.Service.Host], Node{Name: h.Hostname, UUID: h.ID})
		}
		next := false
		for _, l := range page.Links {
			next = next || l.Rel == "next"
		}
		if !next || len(page.Hypervisors) == 0 {
			return out, nil
		}
		marker = page.Hypervisors[len(page.Hypervisors)-1].ID
	}
	return nil, fmt.Errorf("list compute nodes: more than %d pages", 100000)
}

// Service is a nova-compute service.
type Service struct {
	ID             string
	Host           string
	Disabled       bool
	DisabledReason string
	// Up is Nova's view of the service's liveness (state "up").
	Up bool
}

// ComputeService returns the nova-compute service of host, or ErrNotFound.
func (c *Compute) ComputeService(ctx context.Context, host string) (Service, error) {
	ctx, cancel := bound(ctx, c.timeout)
	defer cancel()
	op := fmt.Sprintf("find the nova-compute service of %q", host)
	page, err := services.List(c.c, services.ListOpts{Binary: "nova-compute", Host: host}).AllPages(ctx)
	if err != nil {
		return Service{}, apiError(op, err)
	}
	all, err := services.ExtractServices(page)
	if err != nil {
		return Service{}, fmt.Errorf("%s: %w", op, err)
	}
	for _, s := range all {
		// The host filter is exact in Nova; check anyway.
		if s.Host == host && s.Binary == "nova-compute" {
			return Service{ID: s.ID, Host: s.Host, Disabled: s.Status == string(services.ServiceDisabled),
				DisabledReason: s.DisabledReason, Up: s.State == "up"}, nil
		}
	}
	return Service{}, fmt.Errorf("%s: %w", op, ErrNotFound)
}

// DisableService disables a nova-compute service with reason (1-255
// characters).
func (c *Compute) DisableService(ctx context.Context, id, reason string) error {
	ctx, cancel := bound(ctx, c.timeout)
	defer cancel()
	_, err := services.Update(ctx, c.c, id, services.UpdateOpts{Status: services.ServiceDisabled, DisabledReason: reason}).Extract()
	if err != nil {
		return apiError("disable nova-compute service "+id, err)
	}
	return nil
}

// EnableService enables a nova-compute service.
func (c *Compute) EnableService(ctx context.Context, id string) error {
	ctx, cancel := bound(ctx, c.timeout)
	defer cancel()
	_, err := services.Update(ctx, c.c, id, services.UpdateOpts{Status: services.ServiceEnabled}).Extract()
	if err != nil {
		return apiError("enable nova-compute service "+id, err)
	}
	return nil
}
