package authtoken_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/trustpool/trustpool/keystone-auth/authtoken"
	"github.com/trustpool/trustpool/keystone-auth/policy"
)

// Example wires the middleware and the policy engine in front of an API, as a Trustpool
// service does with its [keystone_authtoken] and [oslo_policy] sections.
func Example() {
	opts := authtoken.DefaultOptions()
	opts.AuthURL = "http://controller:5000/v3"
	opts.WWWAuthenticateURI = "http://controller:5000/v3"
	opts.Username, opts.Password, opts.UserDomainName = "trustpool", "secret", "Default"
	opts.ProjectName, opts.ProjectDomainName = "service", "Default"
	setup, err := authtoken.Open(context.Background(), opts, authtoken.OpenConfig{})
	if err != nil {
		log.Fatal(err)
	}
	enf, err := policy.New(policy.Config{
		Options: policy.DefaultOptions(),
		BaseDir: "/etc/trustpool",
		Defaults: []policy.RuleDefault{{
			Name: "hosts:list", CheckStr: "role:reader and project_id:%(project_id)s",
			Description: "List the hosts of a project.", Operations: []policy.Operation{{Method: "GET", Path: "/v1/projects/{project}/hosts"}},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	api := http.NewServeMux()
	api.HandleFunc("GET /v1/projects/{project}/hosts", func(w http.ResponseWriter, r *http.Request) {
		auth, _ := authtoken.FromContext(r.Context())
		ok, err := enf.Authorize("hosts:list", map[string]any{"project_id": r.PathValue("project")}, auth.PolicyCredentials())
		if err != nil || !ok {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte("[]"))
	})
	srv := &http.Server{Addr: "127.0.0.1:8778", Handler: setup.Middleware.Wrap(api), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
