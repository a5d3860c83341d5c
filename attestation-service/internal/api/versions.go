package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/policy"
)

// Profile versions: GET lists and shows them, POST adds a candidate from
// a JSON profile document, POST .../state moves one through its rollout.
// Adding from learn is POST /v1/profiles/learn with new_version.

func versionView(v store.ProfileVersion) (attestapi.ProfileVersion, error) {
	p, err := parseStored(store.Profile{Name: v.Profile, Body: v.Body})
	if err != nil {
		return attestapi.ProfileVersion{}, err
	}
	return attestapi.ProfileVersion{ProfileName: v.Profile, Version: v.Version, State: v.State, Hosts: v.Hosts,
		Fraction: v.Fraction, Source: v.Source, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt, Profile: attestapi.ProfileFrom(p)}, nil
}

// versionViewHosts is versionView with, for a canary, the hosts in it now.
func (s *server) versionViewHosts(r *http.Request, v store.ProfileVersion) (attestapi.ProfileVersion, error) {
	av, err := versionView(v)
	if err != nil || v.State != store.VersionCanary {
		return av, err
	}
	av.InCanary, err = s.cfg.Store.CanaryHosts(r.Context(), v)
	return av, err
}

// versionParam is the {version} of the path.
func versionParam(r *http.Request) (int, error) {
	s := r.PathValue("version")
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || strconv.Itoa(n) != s {
		return 0, httpErr(http.StatusBadRequest, fmt.Sprintf("version %q is not a version number (1, 2, ...)", s), nil)
	}
	return n, nil
}

func (s *server) listVersions(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleVersionsRead, nil); err != nil {
		return err
	}
	if _, err := queryParams(r); err != nil {
		return err
	}
	vs, err := s.cfg.Store.ProfileVersions(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	out := attestapi.ProfileVersionList{Versions: []attestapi.ProfileVersion{}}
	for _, v := range vs {
		av, err := s.versionViewHosts(r, v)
		if err != nil {
			return err
		}
		out.Versions = append(out.Versions, av)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getVersion(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleVersionsRead, nil); err != nil {
		return err
	}
	if _, err := queryParams(r); err != nil {
		return err
	}
	n, err := versionParam(r)
	if err != nil {
		return err
	}
	return s.writeVersion(w, r, http.StatusOK, r.PathValue("name"), n)
}

func (s *server) writeVersion(w http.ResponseWriter, r *http.Request, code int, profile string, n int) error {
	v, err := s.cfg.Store.GetProfileVersion(r.Context(), profile, n)
	if err != nil {
		return err
	}
	av, err := s.versionViewHosts(r, v)
	if err != nil {
		return err
	}
	writeJSON(w, code, av)
	return nil
}

// createVersion stores a JSON profile document as a new candidate version
// of the profile in the path.
func (s *server) createVersion(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	return s.admin(r, RuleVersionsWrite, "profile.version.create", name, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		var d attestapi.Profile
		if err := decodeJSON(r, &d); err != nil {
			return "", err
		}
		if d.Name == "" {
			d.Name = name
		}
		if d.Name != name {
			return "", httpErr(http.StatusBadRequest, "profile name in body differs from the URL", nil)
		}
		p, err := fromDoc(d)
		if err != nil {
			return "", err
		}
		sp, err := storeProfile(p)
		if err != nil {
			return "", err
		}
		n, err := s.cfg.Engine.AddProfileVersion(r.Context(), name, sp.Body, "imported document")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("version=%d state=candidate", n), s.writeVersion(w, r, http.StatusCreated, name, n)
	})
}

// setVersionState moves a version to another rollout state.
func (s *server) setVersionState(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	target := name + "/" + r.PathValue("version")
	return s.admin(r, RuleVersionsWrite, "profile.version.set_state", target, func() (string, error) {
		force, err := forceParam(r)
		if err != nil {
			return "", err
		}
		n, err := versionParam(r)
		if err != nil {
			return "", err
		}
		var body attestapi.VersionState
		if err := decodeJSON(r, &body); err != nil {
			return "", err
		}
		if body.State == "" {
			return "", httpErr(http.StatusBadRequest, `"state" is required: candidate, canary, approved or retired`, nil)
		}
		var fraction float64
		if body.Fraction != nil {
			// Checked here: the store reads 0 as "no fraction", a
			// request that says 0 is malformed.
			if fraction = *body.Fraction; !(fraction > 0 && fraction <= 1) {
				return "", &HTTPError{Code: http.StatusBadRequest, Reason: attestapi.ReasonInvalidFraction,
					Msg: fmt.Sprintf(`"fraction" %v is not a fraction of hosts: more than 0, at most 1 (0.1 is one host in ten)`, fraction)}
			}
		}
		for i, h := range body.Hosts {
			if slices.Contains(body.Hosts[:i], h) {
				return "", httpErr(http.StatusBadRequest, fmt.Sprintf("host %q is listed twice", h), nil)
			}
			if _, err := s.cfg.Store.GetHost(r.Context(), h); errors.Is(err, store.ErrNotFound) {
				return "", &HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("host %q does not exist: a canary names enrolled hosts", h),
					Reason: attestapi.ReasonUnknownHost}
			} else if err != nil {
				return "", err
			}
		}
		from := body.From
		if from == "" {
			cur, err := s.cfg.Store.GetProfileVersion(r.Context(), name, n)
			if err != nil {
				return "", err
			}
			from = cur.State
		}
		relying, err := s.cfg.Engine.VersionReliance(r.Context(), name, n, body.State, body.Hosts, fraction)
		if err != nil {
			return "", err
		}
		if len(relying) > 0 && !force {
			return "", forceRequired(attestapi.ReasonHostsRelyOnVersion, fmt.Sprintf("profile %q version %d is what %s matched: making it %s turns them untrusted",
				name, n, quoteList("host", relying), body.State), "repeat with force=true to change it anyway")
		}
		if err := s.cfg.Engine.SetProfileVersionState(r.Context(), name, n, from, body.State, body.Hosts, fraction); err != nil {
			return "", err
		}
		detail := "from=" + from + " state=" + body.State
		if len(body.Hosts) > 0 {
			detail += " hosts=" + strings.Join(body.Hosts, ",")
		}
		if fraction != 0 {
			detail += " fraction=" + strconv.FormatFloat(fraction, 'g', -1, 64)
		}
		if len(relying) > 0 {
			detail += "; forced; hosts relying on it: " + strings.Join(relying, ",")
		}
		return detail, s.writeVersion(w, r, http.StatusOK, name, n)
	})
}

// versionStateError maps a refused state change to its answer: 400 for a
// malformed request, 409 for a conflict with the stored state.
func versionStateError(err error) (*HTTPError, bool) {
	var ve *store.VersionStateError
	if !errors.As(err, &ve) {
		return nil, false
	}
	code := http.StatusConflict
	if ve.BadRequest {
		code = http.StatusBadRequest
	}
	return &HTTPError{Code: code, Msg: ve.Error(), Reason: ve.Reason}, true
}

// learnVersion stores a learned profile as a new candidate version of the
// existing profile of its name and answers with what was learned.
func (s *server) learnVersion(w http.ResponseWriter, r *http.Request, p *policy.Profile, l *policy.Learned, source string) (string, error) {
	sp, err := storeProfile(p)
	if err != nil {
		return "", err
	}
	n, err := s.cfg.Engine.AddProfileVersion(r.Context(), p.Name, sp.Body, "learned from "+source)
	if err != nil {
		return "", err
	}
	v, err := s.cfg.Store.GetProfileVersion(r.Context(), p.Name, n)
	if err != nil {
		return "", err
	}
	at := v.CreatedAt
	out := attestapi.Learned{Profile: attestapi.ProfileFrom(p), UpdatedAt: &at, FactPCRs: map[string][]string{},
		AddedPCRs: []int{}, Warnings: l.Warnings, Version: n}
	for pcr, facts := range l.FactPCRs {
		out.FactPCRs[strconv.Itoa(pcr)] = facts
	}
	out.AddedPCRs = append(out.AddedPCRs, l.AddedPCRs...)
	writeJSON(w, http.StatusCreated, out)
	return fmt.Sprintf("learned from %s as version %d (candidate)", source, n), nil
}
