package api

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/policy"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func (s *server) listHosts(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleHostsList, nil); err != nil {
		return err
	}
	if _, err := queryParams(r); err != nil {
		return err
	}
	out, err := s.cfg.Engine.HostViews(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"hosts": out})
	return nil
}

func (s *server) getHost(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	if err := s.authorize(r, RuleHostsGet, map[string]any{"target": host}); err != nil {
		return err
	}
	if _, err := queryParams(r); err != nil {
		return err
	}
	hv, err := s.cfg.Engine.HostView(r.Context(), host)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"host": hv})
	return nil
}

func (s *server) history(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	if err := s.authorize(r, RuleHostsHistory, map[string]any{"target": host}); err != nil {
		return err
	}
	q, err := queryParams(r, "limit")
	if err != nil {
		return err
	}
	limit, err := limitParam(q, 100, 1000)
	if err != nil {
		return err
	}
	hist, err := s.cfg.Store.History(r.Context(), host, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"host": host, "history": hist})
	return nil
}

func (s *server) attestNow(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	return s.admin(r, RuleHostsAttest, "host.attest", host, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		h, err := s.cfg.Store.GetHost(r.Context(), host)
		if err != nil {
			return "", err
		}
		if !h.Activated {
			return "", httpErr(http.StatusConflict, "host is not enrolled", nil)
		}
		s.cfg.Trigger(host)
		writeJSON(w, http.StatusAccepted, map[string]any{"host": host, "attestation": "scheduled"})
		return "", nil
	})
}

func (s *server) deleteHost(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	return s.admin(r, RuleHostsDelete, "host.delete", host, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		if err := s.cfg.Engine.DeleteHost(r.Context(), host); err != nil {
			return "", err
		}
		w.WriteHeader(http.StatusNoContent)
		return "", nil
	})
}

// ekDecision is the optional body of approve and reject.
type ekDecision struct {
	// EKFingerprint, when set, must name the pending EK (what the
	// administrator reviewed).
	EKFingerprint string `json:"ek_fingerprint"`
	// Force (approve only) moves an EK bound to another host.
	Force bool `json:"force"`
}

func decodeEKDecision(r *http.Request, allowForce bool) (ekDecision, error) {
	var d ekDecision
	b, err := readBody(r)
	if err != nil {
		return d, err
	}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := decodeJSONBytes(b, &d); err != nil {
			return d, err
		}
	}
	if d.Force && !allowForce {
		return d, httpErr(http.StatusBadRequest, "force applies to approve only", nil)
	}
	if d.EKFingerprint != "" {
		d.EKFingerprint = strings.ToLower(d.EKFingerprint)
		if _, err := hex.DecodeString(d.EKFingerprint); err != nil || len(d.EKFingerprint) != 64 {
			return d, httpErr(http.StatusBadRequest, "ek_fingerprint must be 64 hexadecimal digits (the SHA-256 shown as pending_ek_fingerprint)", nil)
		}
	}
	return d, nil
}

// approve binds a host's pending EK (engine.ApproveEK).
func (s *server) approve(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	return s.admin(r, RuleHostsApprove, "host.approve_ek", host, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		d, err := decodeEKDecision(r, true)
		if err != nil {
			return "", err
		}
		res, err := s.cfg.Engine.ApproveEK(r.Context(), host, engine.Approval{Fingerprint: d.EKFingerprint, Force: d.Force})
		if inUse := (*store.EKInUseError)(nil); errors.As(err, &inUse) {
			return "", httpErr(http.StatusConflict, fmt.Sprintf("the pending EK is bound to host %s: approve with \"force\": true to move it here (%s then loses its binding)",
				inUse.Host, inUse.Host), nil)
		}
		if err != nil {
			return "", err
		}
		out := map[string]any{"host": host, "approved": true, "ek_fingerprint": res.Fingerprint}
		detail := "approved EK " + res.Fingerprint
		if res.MovedFrom != "" {
			out["moved_from"] = res.MovedFrom
			detail += " moved from host " + res.MovedFrom
		}
		writeJSON(w, http.StatusOK, out)
		return detail, nil
	})
}

// reject drops a host's pending EK and refuses it from then on
// (engine.RejectEK).
func (s *server) reject(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	return s.admin(r, RuleHostsReject, "host.reject_ek", host, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		d, err := decodeEKDecision(r, false)
		if err != nil {
			return "", err
		}
		fp, err := s.cfg.Engine.RejectEK(r.Context(), host, d.EKFingerprint)
		if err != nil {
			return "", err
		}
		writeJSON(w, http.StatusOK, map[string]any{"host": host, "rejected": true, "ek_fingerprint": fp})
		return "rejected EK " + fp, nil
	})
}

func (s *server) setHostProfiles(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	var body struct {
		Profiles *[]string `json:"profiles"`
	}
	return s.admin(r, RuleHostsProfiles, "host.set_profiles", host, func() (string, error) {
		q, err := queryParams(r, "force")
		if err != nil {
			return "", err
		}
		force, err := forceParam(q)
		if err != nil {
			return "", err
		}
		if err := decodeJSON(r, &body); err != nil {
			return "", err
		}
		var profiles []string
		if body.Profiles != nil {
			profiles = *body.Profiles
			if profiles == nil {
				profiles = []string{}
			}
		}
		// A host required to satisfy a profile that does not exist can never
		// be trusted: refuse the assignment instead.
		for i, name := range profiles {
			if slices.Contains(profiles[:i], name) {
				return "", httpErr(http.StatusBadRequest, fmt.Sprintf("profile %q is listed twice", name), nil)
			}
			if _, err := s.cfg.Store.GetProfile(r.Context(), name); errors.Is(err, store.ErrNotFound) {
				return "", httpErr(http.StatusBadRequest, fmt.Sprintf("profile %q does not exist", name), nil)
			} else if err != nil {
				return "", err
			}
		}
		unmet, err := s.cfg.Engine.AssignmentLosesTrust(r.Context(), host, profiles)
		if err != nil {
			return "", err
		}
		if len(unmet) > 0 && !force {
			return "", httpErr(http.StatusConflict, fmt.Sprintf("host %q is trusted, but its latest evidence does not satisfy %s: "+
				"this assignment makes it untrusted; repeat with force=true to assign anyway", host, quoteList("profile", unmet)), nil)
		}
		if err := s.cfg.Engine.SetHostProfiles(r.Context(), host, profiles); err != nil {
			return "", err
		}
		writeJSON(w, http.StatusOK, map[string]any{"host": host, "profiles": profiles})
		detail := "profiles=" + strings.Join(profiles, ",")
		switch {
		case profiles == nil:
			detail = "profiles=default"
		case len(profiles) == 0:
			detail = "profiles=any"
		}
		if len(unmet) > 0 {
			detail += "; forced: the host no longer satisfies " + strings.Join(unmet, ",")
		}
		return detail, nil
	})
}

// profileDoc is a profile in the API's JSON: the TOML file format's keys.
type profileDoc struct {
	Name        string              `json:"name"`
	Description string              `json:"description,omitempty"`
	Facts       map[string][]string `json:"facts,omitempty"`
	PCRs        map[string][]string `json:"pcrs,omitempty"`
	IMA         *imaDoc             `json:"ima,omitempty"`
}

type imaDoc struct {
	AllowViolations bool                `json:"allow_violations"`
	Exclude         []string            `json:"exclude,omitempty"`
	Allowlist       map[string][]string `json:"allowlist,omitempty"`
}

func toDoc(p *policy.Profile) profileDoc {
	d := profileDoc{Name: p.Name, Description: p.Description, Facts: p.Facts, PCRs: p.PCRs}
	if p.IMA != nil {
		d.IMA = &imaDoc{AllowViolations: p.IMA.AllowViolations, Exclude: p.IMA.Exclude, Allowlist: p.IMA.Allowlist}
	}
	return d
}

func fromDoc(d profileDoc) (*policy.Profile, error) {
	p := &policy.Profile{Name: d.Name, Description: d.Description, Facts: d.Facts, PCRs: d.PCRs}
	if d.IMA != nil {
		p.IMA = &policy.IMARules{AllowViolations: d.IMA.AllowViolations, Exclude: d.IMA.Exclude, Allowlist: d.IMA.Allowlist}
	}
	if err := p.Validate(); err != nil {
		return nil, httpErr(http.StatusBadRequest, "profile rejected", err)
	}
	return p, nil
}

func storeProfile(p *policy.Profile) (store.Profile, error) {
	b, err := policy.Marshal([]*policy.Profile{p})
	if err != nil {
		return store.Profile{}, httpErr(http.StatusBadRequest, "profile rejected", err)
	}
	return store.Profile{Name: p.Name, Body: string(b)}, nil
}

func parseStored(sp store.Profile) (*policy.Profile, error) {
	ps, err := policy.Parse([]byte(sp.Body))
	if err != nil || len(ps) != 1 {
		return nil, fmt.Errorf("stored profile %q unusable: %w", sp.Name, err)
	}
	return ps[0], nil
}

func (s *server) listProfiles(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleProfilesRead, nil); err != nil {
		return err
	}
	if _, err := queryParams(r); err != nil {
		return err
	}
	sps, err := s.cfg.Store.ListProfiles(r.Context())
	if err != nil {
		return err
	}
	out := []any{}
	for _, sp := range sps {
		p, err := parseStored(sp)
		if err != nil {
			return err
		}
		out = append(out, map[string]any{"profile": toDoc(p), "updated_at": sp.UpdatedAt})
	}
	writeJSON(w, http.StatusOK, map[string]any{"profiles": out})
	return nil
}

func (s *server) getProfile(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleProfilesRead, nil); err != nil {
		return err
	}
	if _, err := queryParams(r); err != nil {
		return err
	}
	sp, err := s.cfg.Store.GetProfile(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	p, err := parseStored(sp)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"profile": toDoc(p), "updated_at": sp.UpdatedAt})
	return nil
}

func (s *server) putProfile(w http.ResponseWriter, r *http.Request, action, name string, mode store.PutMode) error {
	return s.admin(r, RuleProfilesWrite, action, name, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		var d profileDoc
		if err := decodeJSON(r, &d); err != nil {
			return "", err
		}
		if name != "" && d.Name == "" {
			d.Name = name
		}
		if name != "" && d.Name != name {
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
		if err := s.cfg.Store.PutProfile(r.Context(), sp, mode); err != nil {
			return "", err
		}
		s.cfg.Engine.TriggerAll(r.Context())
		code := http.StatusOK
		if mode == store.Create {
			code = http.StatusCreated
		}
		writeJSON(w, code, map[string]any{"profile": toDoc(p)})
		return "", nil
	})
}

func (s *server) createProfile(w http.ResponseWriter, r *http.Request) error {
	return s.putProfile(w, r, "profile.create", "", store.Create)
}

func (s *server) updateProfile(w http.ResponseWriter, r *http.Request) error {
	return s.putProfile(w, r, "profile.update", r.PathValue("name"), store.Replace)
}

func (s *server) deleteProfile(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	return s.admin(r, RuleProfilesWrite, "profile.delete", name, func() (string, error) {
		q, err := queryParams(r, "force")
		if err != nil {
			return "", err
		}
		force, err := forceParam(q)
		if err != nil {
			return "", err
		}
		if _, err := s.cfg.Store.GetProfile(r.Context(), name); err != nil {
			return "", err
		}
		relying, err := s.cfg.Engine.ProfileReliance(r.Context(), name)
		if err != nil {
			return "", err
		}
		if len(relying) > 0 && !force {
			return "", httpErr(http.StatusConflict, fmt.Sprintf("profile %q is relied on by %s: deleting it makes them untrusted "+
				"(or keeps them from being trusted); repeat with force=true to delete it anyway", name, quoteList("host", relying)), nil)
		}
		if err := s.cfg.Store.DeleteProfile(r.Context(), name); err != nil {
			return "", err
		}
		s.cfg.Engine.TriggerAll(r.Context())
		w.WriteHeader(http.StatusNoContent)
		if len(relying) > 0 {
			return "forced; hosts relying on it: " + strings.Join(relying, ","), nil
		}
		return "", nil
	})
}

func (s *server) exportProfiles(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleProfilesRead, nil); err != nil {
		return err
	}
	if _, err := queryParams(r); err != nil {
		return err
	}
	sps, err := s.cfg.Store.ListProfiles(r.Context())
	if err != nil {
		return err
	}
	var ps []*policy.Profile
	for _, sp := range sps {
		p, err := parseStored(sp)
		if err != nil {
			return err
		}
		ps = append(ps, p)
	}
	b, err := policy.Marshal(ps)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/toml")
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(b)
	return err
}

// importProfiles reads the TOML profile file format and creates or replaces
// every profile in it. The whole file is validated before anything is
// stored.
func (s *server) importProfiles(w http.ResponseWriter, r *http.Request) error {
	return s.admin(r, RuleProfilesWrite, "profile.import", "*", func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		b, err := readBody(r)
		if err != nil {
			return "", err
		}
		ps, err := policy.Parse(b)
		if err != nil {
			return "", httpErr(http.StatusBadRequest, "profile file rejected", err)
		}
		var names []string
		for _, p := range ps {
			sp, err := storeProfile(p)
			if err != nil {
				return "", err
			}
			if err := s.cfg.Store.PutProfile(r.Context(), sp, store.Upsert); err != nil {
				return "", err
			}
			names = append(names, p.Name)
		}
		s.cfg.Engine.TriggerAll(r.Context())
		writeJSON(w, http.StatusOK, map[string]any{"imported": names})
		return "profiles=" + strings.Join(names, ","), nil
	})
}

// learnProfile builds a profile from a host's last verified evidence
// (policy.Learn). With merge, the learned values are added to an existing
// profile of that name (rollouts). Learn also pins the PCRs the learned
// facts are read from unless skip_fact_pcrs is set; the answer lists them
// ("fact_pcrs", "added_pcrs") and any fact left untrustworthy ("warnings").
func (s *server) learnProfile(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Host         string   `json:"host"`
		Name         string   `json:"name"`
		Description  string   `json:"description"`
		PCRs         []int    `json:"pcrs"`
		Facts        []string `json:"facts"`
		SkipFactPCRs bool     `json:"skip_fact_pcrs"`
		Merge        bool     `json:"merge"`
	}
	b, err := readBody(r)
	if err != nil {
		return err
	}
	r.Body = readCloser{bytesReader(b)}
	_ = decodeJSONBytes(b, &body)
	return s.admin(r, RuleProfilesWrite, "profile.learn", body.Name, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		if err := decodeJSONBytes(b, &body); err != nil {
			return "", err
		}
		if body.Host == "" || body.Name == "" {
			return "", httpErr(http.StatusBadRequest, "host and name are required", nil)
		}
		in, err := s.cfg.Engine.LearnInput(r.Context(), body.Host)
		if errors.Is(err, engine.ErrNoEvidence) {
			return "", httpErr(http.StatusConflict, "host has no verified evidence to learn from", nil)
		}
		if err != nil {
			return "", err
		}
		learned, err := policy.Learn(body.Name, in, policy.LearnOptions{PCRs: body.PCRs, Facts: body.Facts, SkipFactPCRs: body.SkipFactPCRs})
		if err != nil {
			return "", httpErr(http.StatusBadRequest, "cannot learn profile", err)
		}
		p := learned.Profile
		p.Description = body.Description
		if p.Description == "" {
			p.Description = "learned from host " + body.Host
		}
		mode := store.Create
		if body.Merge {
			if sp, err := s.cfg.Store.GetProfile(r.Context(), body.Name); err == nil {
				old, err := parseStored(sp)
				if err != nil {
					return "", err
				}
				old.Merge(p)
				p, mode = old, store.Replace
			}
		}
		sp, err := storeProfile(p)
		if err != nil {
			return "", err
		}
		if err := s.cfg.Store.PutProfile(r.Context(), sp, mode); err != nil {
			return "", err
		}
		s.cfg.Engine.TriggerAll(r.Context())
		code := http.StatusCreated
		if mode == store.Replace {
			code = http.StatusOK
		}
		out := map[string]any{"profile": toDoc(p), "fact_pcrs": learned.FactPCRs, "added_pcrs": learned.AddedPCRs}
		if len(learned.Warnings) > 0 {
			out["warnings"] = learned.Warnings
		}
		writeJSON(w, code, out)
		return "learned from " + body.Host, nil
	})
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func (s *server) audit(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleAuditRead, nil); err != nil {
		return err
	}
	q, err := queryParams(r, "limit")
	if err != nil {
		return err
	}
	limit, err := limitParam(q, 500, 1000)
	if err != nil {
		return err
	}
	recs, err := s.cfg.Store.Audit(r.Context(), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"audit": recs})
	return nil
}

// forceParam reads the optional "force" query parameter.
func forceParam(q url.Values) (bool, error) {
	if !q.Has("force") {
		return false, nil
	}
	v := q.Get("force")
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, httpErr(http.StatusBadRequest, fmt.Sprintf("force must be true or false, not %q", v), nil)
	}
	return b, nil
}

// quoteList renders names for an error message: "host \"a\"", "3 hosts
// (\"a\", \"b\", \"c\")", with at most 10 names.
func quoteList(noun string, names []string) string {
	shown := names[:min(len(names), 10)]
	quoted := make([]string, len(shown))
	for i, n := range shown {
		quoted[i] = strconv.Quote(n)
	}
	list := strings.Join(quoted, ", ")
	if len(names) > len(shown) {
		list += fmt.Sprintf(" and %d more", len(names)-len(shown))
	}
	if len(names) == 1 {
		return noun + " " + list
	}
	return fmt.Sprintf("%d %ss (%s)", len(names), noun, list)
}
