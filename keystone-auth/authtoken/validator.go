package authtoken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/trustpool/trustpool/keystone-auth/credentials"
)

var (
	// ErrInvalidToken reports a token Keystone does not recognise as valid (404), or
	// whose data is unusable.
	ErrInvalidToken = errors.New("invalid token")
	// ErrUnavailable reports that Keystone could not validate a token: unreachable,
	// failing, or refusing the service's own credentials. The middleware answers 503.
	ErrUnavailable = errors.New("keystone unavailable")

	errCanceled = errors.New("validation abandoned")
)

// Validator fetches a token's data from Keystone. allowExpired asks Keystone to return
// recently expired tokens too (allowed only with a valid service token).
type Validator interface {
	Validate(ctx context.Context, token string, allowExpired bool) (json.RawMessage, error)
}

// KeystoneValidator validates tokens with GET /v3/auth/tokens using the service's own
// token (from the identity client's provider, which re-authenticates as needed).
type KeystoneValidator struct {
	Identity       *gophercloud.ServiceClient
	IncludeCatalog bool
	// Provider, when set, renews the service's token shortly before it expires instead
	// of waiting for Keystone's 401 (gophercloud re-authenticates after one either way).
	Provider *credentials.Provider
}

var _ Validator = (*KeystoneValidator)(nil)

// Validate implements Validator.
func (v *KeystoneValidator) Validate(ctx context.Context, token string, allowExpired bool) (json.RawMessage, error) {
	url := v.Identity.ServiceURL("auth", "tokens")
	sep := "?"
	if !v.IncludeCatalog {
		url += "?nocatalog"
		sep = "&"
	}
	if allowExpired {
		url += sep + "allow_expired=1"
	}
	if v.Provider != nil {
		if _, err := v.Provider.Token(ctx); err != nil {
			return nil, fmt.Errorf("renew the service token: %w: %w", ErrUnavailable, err)
		}
	}
	var body json.RawMessage
	//nolint:bodyclose // gophercloud closes the body after decoding it into JSONResponse
	_, err := v.Identity.Get(ctx, url, &body, &gophercloud.RequestOpts{
		MoreHeaders: map[string]string{
			"X-Subject-Token":                 token,
			"OpenStack-Identity-Access-Rules": "1",
		},
		OkCodes: []int{http.StatusOK, http.StatusNonAuthoritativeInfo},
	})
	switch {
	case err == nil:
		return body, nil
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return nil, fmt.Errorf("keystone: token not found: %w", ErrInvalidToken)
	}
	var uc gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &uc) {
		return nil, fmt.Errorf("validate token: keystone answered %d: %w", uc.Actual, ErrUnavailable)
	}
	var ur *gophercloud.ErrUnableToReauthenticate
	var urv gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &ur) || errors.As(err, &urv) {
		return nil, fmt.Errorf("validate token: the service's own keystone credentials were rejected: %w", ErrUnavailable)
	}
	return nil, fmt.Errorf("validate token: %w: %w", ErrUnavailable, err)
}
