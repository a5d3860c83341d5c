package attestclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/trustpool/trustpool/internal/attestapi"
)

// CreateLaunch creates a trusted launch from a sealed request.
func (c *Client) CreateLaunch(ctx context.Context, lc attestapi.LaunchCreate) (attestapi.Launch, error) {
	var out attestapi.LaunchEnvelope
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.PathLaunches, body: lc, out: &out})
	return out.Launch, err
}

// ListLaunches lists the caller's project's launches, or every project's
// with allProjects (administrators); limit ≤ 0 is the service's default.
func (c *Client) ListLaunches(ctx context.Context, allProjects bool, limit int) ([]attestapi.Launch, error) {
	q := limitQuery(limit)
	if allProjects {
		if q == nil {
			q = url.Values{}
		}
		q.Set(attestapi.QueryAllProjects, strconv.FormatBool(true))
	}
	var out attestapi.LaunchList
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.PathLaunches, query: q, out: &out})
	return out.Launches, err
}

// GetLaunch returns a launch with its history and latest receipt.
func (c *Client) GetLaunch(ctx context.Context, id string) (attestapi.Launch, error) {
	var out attestapi.LaunchEnvelope
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.LaunchPath(id), out: &out})
	return out.Launch, err
}

// DeleteLaunch deletes a pending or ended launch.
func (c *Client) DeleteLaunch(ctx context.Context, id string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: attestapi.LaunchPath(id)})
}

// RedeliverLaunch asks the service to deliver a delivered launch's secret
// again (its instance restarted) and returns the launch and the outcome.
func (c *Client) RedeliverLaunch(ctx context.Context, id string) (attestapi.LaunchRedelivery, error) {
	var out attestapi.LaunchRedelivery
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.LaunchRedeliverPath(id), out: &out})
	return out, err
}
