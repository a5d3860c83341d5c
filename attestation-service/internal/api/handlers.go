package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
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
	hosts, err := s.cfg.Store.ListHosts(r.Context())
	if err != nil {
		return err
	}
	out := []engine.HostView{}
	for _, h := range hosts {
		out = append(out, s.cfg.Engine.View(h, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"hosts": out})
	return nil
}

func (s *server) getHost(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	if err := s.authorize(r, RuleHostsGet, map[string]any{"target": host}); err != nil {
		return err
	}
	h, err := s.cfg.Store.GetHost(r.Context(), host)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"host": s.cfg.Engine.View(h, true)})
	return nil
}

func (s *server) history(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	if err := s.authorize(r, RuleHostsHistory, map[string]any{"target": host}); err != nil {
		return err
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return httpErr(http.StatusBadRequest, "limit must be 1-1000", nil)
		}
		limit = n
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
		h, err := s.cfg.Store.GetHost(r.Context(), host)
		if err != nil {
			return "", err
		}
		if !h.Activated || h.PendingEKPublic != nil {
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
		if err := s.cfg.Engine.DeleteHost(r.Context(), host); err != nil {
			return "", err
		}
		w.WriteHeader(http.StatusNoContent)
		return "", nil
	})
}

func (s *server) approve(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	return s.admin(r, RuleHostsApprove, "host.approve_ek", host, func() (string, error) {
		h, err := s.cfg.Store.GetHost(r.Context(), host)
		if err != nil {
			return "", err
		}
		detail := "pending EK " + s.cfg.Engine.View(h, false).PendingEKFingerprint
		if err := s.cfg.Engine.ApproveEK(r.Context(), host); err != nil {
			if errors.Is(err, engine.ErrNothingPending) {
				return "", httpErr(http.StatusConflict, "no EK awaits approval for this host", nil)
			}
			return "", err
		}
		writeJSON(w, http.StatusOK, map[string]any{"host": host, "approved": true})
		return detail, nil
	})
}

func (s *server) setHostProfiles(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	var body struct {
		Profiles *[]string `json:"profiles"`
	}
	return s.admin(r, RuleHostsProfiles, "host.set_profiles", host, func() (string, error) {
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
		if err := s.cfg.Engine.SetHostProfiles(r.Context(), host, profiles); err != nil {
			return "", err
		}
		writeJSON(w, http.StatusOK, map[string]any{"host": host, "profiles": profiles})
		return fmt.Sprintf("profiles=%v", profiles), nil
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
		return nil, httpErr(http.StatusBadRequest, "invalid profile", err)
	}
	return p, nil
}

func storeProfile(p *policy.Profile) (store.Profile, error) {
	b, err := policy.Marshal([]*policy.Profile{p})
	if err != nil {
		return store.Profile{}, httpErr(http.StatusBadRequest, "invalid profile", err)
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
		if err := s.cfg.Store.DeleteProfile(r.Context(), name); err != nil {
			return "", err
		}
		s.cfg.Engine.TriggerAll(r.Context())
		w.WriteHeader(http.StatusNoContent)
		return "", nil
	})
}

func (s *server) exportProfiles(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleProfilesRead, nil); err != nil {
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
		b, err := readBody(r)
		if err != nil {
			return "", err
		}
		ps, err := policy.Parse(b)
		if err != nil {
			return "", httpErr(http.StatusBadRequest, "invalid profile file", err)
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

func decodeJSONBytes(b []byte, v any) error {
	dec := jsonDecoder(b)
	if err := dec.Decode(v); err != nil {
		return httpErr(http.StatusBadRequest, "malformed JSON body", err)
	}
	return nil
}

func (s *server) audit(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, RuleAuditRead, nil); err != nil {
		return err
	}
	recs, err := s.cfg.Store.Audit(r.Context(), 500)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"audit": recs})
	return nil
}
