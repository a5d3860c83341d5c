package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/trustpool/trustpool/attestation-service/internal/launcher"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/keystone-auth/authtoken"
	kpolicy "github.com/trustpool/trustpool/keystone-auth/policy"
)

// Rule names of the launch operations.
const (
	RuleLaunchesCreate    = "trustpool:launches:create"
	RuleLaunchesList      = "trustpool:launches:list"
	RuleLaunchesListAll   = "trustpool:launches:list:all_projects"
	RuleLaunchesGet       = "trustpool:launches:get"
	RuleLaunchesDelete    = "trustpool:launches:delete"
	RuleLaunchesRedeliver = "trustpool:launches:redeliver"
)

// launchRules are the launch operations' defaults: launches belong to a
// project; its members create and delete them, its readers see them,
// administrators see and delete every project's.
func launchRules() []kpolicy.RuleDefault {
	project := []string{"project"}
	return []kpolicy.RuleDefault{
		{Name: RuleLaunchesCreate, CheckStr: "rule:" + RuleProjectMember, Description: "Create a trusted launch in one's own project " +
			"(the sealed request must name that project).", Operations: []kpolicy.Operation{{Method: "POST", Path: "/v1/launches"}},
			ScopeTypes: project},
		{Name: RuleLaunchesList, CheckStr: "rule:" + RuleProjectReaderOrAdmin, Description: "List the trusted launches of one's own project.",
			Operations: []kpolicy.Operation{{Method: "GET", Path: "/v1/launches"}}, ScopeTypes: project},
		{Name: RuleLaunchesListAll, CheckStr: "rule:" + RuleAdmin, Description: "List the trusted launches of every project (all_projects=true).",
			Operations: []kpolicy.Operation{{Method: "GET", Path: "/v1/launches?all_projects=true"}}, ScopeTypes: project},
		{Name: RuleLaunchesGet, CheckStr: "rule:" + RuleProjectReaderOrAdmin, Description: "Show a trusted launch, its history and its signed receipt. " +
			"A launch of another project answers 404 to those the rule refuses.",
			Operations: []kpolicy.Operation{{Method: "GET", Path: "/v1/launches/{launch_id}"}}, ScopeTypes: project},
		{Name: RuleLaunchesDelete, CheckStr: "rule:" + RuleProjectMemberOrAdmin, Description: "Delete a pending or ended trusted launch " +
			"(a pending launch's sealed request goes with it).",
			Operations: []kpolicy.Operation{{Method: "DELETE", Path: "/v1/launches/{launch_id}"}}, ScopeTypes: project},
		{Name: RuleLaunchesRedeliver, CheckStr: "rule:" + RuleProjectMember, Description: "Deliver a delivered trusted launch's secret " +
			"again after its instance restarted (the service attests the host afresh first). A launch of another project answers 404 " +
			"to those the show rule refuses.",
			Operations: []kpolicy.Operation{{Method: "POST", Path: "/v1/launches/{launch_id}/redeliver"}}, ScopeTypes: project},
	}
}

// launchesOff answers launch routes when the service runs without them.
func (s *server) launchesOn() error {
	if s.cfg.Launches == nil {
		return httpErr(http.StatusNotFound, "trusted launches are off on this service (launch.enabled = false)", nil)
	}
	return nil
}

// caller is the authenticated user and project.
func caller(r *http.Request) launcher.Caller {
	if a, ok := authtoken.FromContext(r.Context()); ok && a.User != nil {
		return launcher.Caller{UserID: a.User.UserID, ProjectID: a.User.ProjectID}
	}
	return launcher.Caller{}
}

// allowed evaluates rule without failing the request.
func (s *server) allowed(r *http.Request, rule string, target map[string]any) bool {
	auth, ok := authtoken.FromContext(r.Context())
	if !ok || !auth.Confirmed {
		return false
	}
	ok, err := s.cfg.Policy.Authorize(rule, target, auth.PolicyCredentials())
	if err != nil {
		s.log.Error("policy evaluation failed", "rule", rule, "error", err)
	}
	return ok
}

// launchView renders a launch; the host only for administrators.
func (s *server) launchView(r *http.Request, l *store.Launch, hist []store.LaunchEvent) attestapi.Launch {
	v := attestapi.Launch{ID: l.ID, ProjectID: l.ProjectID, UserID: l.UserID, State: l.State, Profile: l.Profile,
		InstanceID: l.InstanceID, HostID: l.HostID, NotAfter: l.NotAfter, Reasons: nonNilStrings(l.Reasons),
		CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt}
	if l.Receipt != nil {
		var sr launch.SignedReceipt
		if err := json.Unmarshal(l.Receipt, &sr); err == nil {
			v.Receipt = &sr
		}
	}
	if s.allowed(r, RuleAdmin, map[string]any{"project_id": l.ProjectID}) {
		v.Host = l.Host
	}
	for _, e := range hist {
		v.History = append(v.History, attestapi.LaunchEvent{At: e.At, State: e.State, Reasons: nonNilStrings(e.Reasons),
			Initiator: e.Initiator})
	}
	return v
}

func nonNilStrings(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func (s *server) createLaunch(w http.ResponseWriter, r *http.Request) error {
	c := caller(r)
	if err := s.authorize(r, RuleLaunchesCreate, map[string]any{"project_id": c.ProjectID}); err != nil {
		return err
	}
	if _, err := queryParams(r); err != nil {
		return err
	}
	if err := s.launchesOn(); err != nil {
		return err
	}
	var body attestapi.LaunchCreate
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if body.KID == "" || len(body.Sealed) == 0 {
		return httpErr(http.StatusBadRequest, "kid and sealed are required (a request sealed to the launch key of GET /v1/keys)", nil)
	}
	l, err := s.cfg.Launches.Create(r.Context(), c, launcher.CreateRequest{KID: body.KID, Sealed: body.Sealed,
		InstanceID: body.InstanceID, HostID: body.HostID})
	if err != nil {
		return err
	}
	w.Header().Set("Location", attestapi.LaunchPath(l.ID))
	writeJSON(w, http.StatusCreated, attestapi.LaunchEnvelope{Launch: s.launchView(r, l, nil)})
	return nil
}

func (s *server) listLaunches(w http.ResponseWriter, r *http.Request) error {
	c := caller(r)
	if err := s.authorize(r, RuleLaunchesList, map[string]any{"project_id": c.ProjectID}); err != nil {
		return err
	}
	q, err := queryParams(r, attestapi.QueryAllProjects, attestapi.QueryLimit)
	if err != nil {
		return err
	}
	all, err := boolParam(q, attestapi.QueryAllProjects)
	if err != nil {
		return err
	}
	limit, err := limitParam(q, 100, 1000)
	if err != nil {
		return err
	}
	project := c.ProjectID
	if all {
		if err := s.authorize(r, RuleLaunchesListAll, map[string]any{"project_id": c.ProjectID}); err != nil {
			return err
		}
		project = ""
	}
	if err := s.launchesOn(); err != nil {
		return err
	}
	ls, err := s.cfg.Launches.List(r.Context(), project, limit)
	if err != nil {
		return err
	}
	out := attestapi.LaunchList{Launches: []attestapi.Launch{}}
	for _, l := range ls {
		out.Launches = append(out.Launches, s.launchView(r, l, nil))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// launchFor loads a launch and enforces rule on its project. A launch the
// caller may not see answers 404, as Nova answers for other projects'
// servers: its existence is not the caller's business.
func (s *server) launchFor(r *http.Request, rule string) (*store.Launch, error) {
	id := r.PathValue("launch_id")
	if err := s.launchesOn(); err != nil {
		return nil, err
	}
	l, err := s.cfg.Launches.Get(r.Context(), id)
	notFound := httpErr(http.StatusNotFound, fmt.Sprintf("launch %q not found", id), nil)
	if errors.Is(err, store.ErrNotFound) {
		// Same answer, after the same policy check, as for a hidden one.
		if err := s.authorize(r, rule, map[string]any{"project_id": caller(r).ProjectID}); err != nil {
			return nil, err
		}
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if err := s.authorize(r, rule, map[string]any{"project_id": l.ProjectID}); err != nil {
		if caller(r).ProjectID != l.ProjectID && !s.allowed(r, RuleLaunchesGet, map[string]any{"project_id": l.ProjectID}) {
			return nil, notFound
		}
		return nil, err
	}
	return l, nil
}

func (s *server) getLaunch(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	l, err := s.launchFor(r, RuleLaunchesGet)
	if err != nil {
		return err
	}
	hist, err := s.cfg.Launches.History(r.Context(), l.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, attestapi.LaunchEnvelope{Launch: s.launchView(r, l, hist)})
	return nil
}

func (s *server) deleteLaunch(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	l, err := s.launchFor(r, RuleLaunchesDelete)
	if err != nil {
		return err
	}
	if err := s.cfg.Launches.Delete(r.Context(), l.ID); err != nil {
		return err
	}
	s.log.Info("launch deleted", "request_id", requestID(r), "launch_id", l.ID, "project_id", l.ProjectID, "user_id", caller(r).UserID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) redeliverLaunch(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	l, err := s.launchFor(r, RuleLaunchesRedeliver)
	if err != nil {
		return err
	}
	rd, err := s.cfg.Launches.Redeliver(r.Context(), l.ID)
	if err != nil {
		return err
	}
	hist, err := s.cfg.Launches.History(r.Context(), l.ID)
	if err != nil {
		return err
	}
	s.log.Info("launch redelivery", "request_id", requestID(r), "launch_id", l.ID, "project_id", l.ProjectID, "user_id", caller(r).UserID,
		"state", rd.State)
	writeJSON(w, http.StatusOK, attestapi.LaunchRedelivery{Launch: s.launchView(r, rd.Launch, hist),
		Redelivery: attestapi.LaunchEvent{At: rd.Launch.UpdatedAt, State: rd.State, Reasons: nonNilStrings(rd.Reasons),
			Initiator: launch.InitiatorUser}})
	return nil
}

// boolParam reads an optional true/false query parameter.
func boolParam(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	v := q.Get(name)
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, httpErr(http.StatusBadRequest, fmt.Sprintf("%s must be true or false, not %q", name, v), nil)
	}
	return b, nil
}

// launchError maps the launcher's errors to statuses and reasons (nil:
// not one).
func launchError(err error) (*HTTPError, bool) {
	var (
		re   *launcher.RequestError
		soon *launcher.TooSoonError
	)
	switch {
	case errors.As(err, &soon):
		return &HTTPError{Code: http.StatusTooManyRequests, Reason: attestapi.ReasonRedeliveryTooSoon, RetryAfter: soon.RetryAfter,
			Msg: fmt.Sprintf("%s: a re-delivery of this launch was started less than %v ago; ask again in %ds", attestapi.ReasonRedeliveryTooSoon,
				soon.Interval, retryAfterSeconds(soon.RetryAfter))}, true
	case errors.As(err, &re):
		return &HTTPError{Code: http.StatusBadRequest, Msg: re.Error(), Reason: re.Reason}, true
	case errors.Is(err, launcher.ErrReplayed):
		return &HTTPError{Code: http.StatusConflict, Reason: attestapi.ReasonLaunchReplayed,
			Msg: "replayed: this sealed launch request was already used; seal a new one"}, true
	case errors.Is(err, launcher.ErrNotDelivered):
		return &HTTPError{Code: http.StatusConflict, Reason: attestapi.ReasonLaunchNotDelivered,
			Msg: "launch_not_delivered: " + err.Error() + "; only a delivered launch's secret can be delivered again"}, true
	case errors.Is(err, launcher.ErrRedeliverOff):
		return &HTTPError{Code: http.StatusConflict, Reason: attestapi.ReasonRedeliveryOff,
			Msg: "redelivery_unavailable: this service has no policy-signing key, so no host keeps a sealed blob to deliver again"}, true
	case errors.Is(err, launcher.ErrBusy):
		return &HTTPError{Code: http.StatusConflict, Reason: attestapi.ReasonLaunchInProgress,
			Msg: "the launch is in progress (bound, attested, sealed or being redelivered); try again once that has ended"}, true
	}
	return nil, false
}
