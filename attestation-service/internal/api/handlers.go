package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/verdict"
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
	writeJSON(w, http.StatusOK, attestapi.HostList{Hosts: out})
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
	writeJSON(w, http.StatusOK, attestapi.HostBody{Host: hv})
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
	limit, err := limitParam(q, attestapi.DefaultHistoryLimit, attestapi.MaxLimit)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Store.GetHost(r.Context(), host); err != nil {
		return err
	}
	hist, err := s.cfg.Store.History(r.Context(), host, limit)
	if err != nil {
		return err
	}
	out := attestapi.History{Host: host, History: make([]attestapi.HistoryEntry, 0, len(hist))}
	for _, e := range hist {
		out.History = append(out.History, attestapi.HistoryEntry{Host: e.Host, At: e.At, Status: verdict.Status(e.Status),
			Reasons: nonNil(e.Reasons), Profiles: nonNil(e.Profiles), Seq: e.Seq, EvidenceDigest: e.EvidenceDigest})
	}
	writeJSON(w, http.StatusOK, out)
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
		// The round's verdict is the first one verified at or after this.
		at := time.Now().UTC()
		s.cfg.Trigger(host)
		writeJSON(w, http.StatusAccepted, attestapi.AttestScheduled{Host: host, Attestation: "scheduled", RequestedAt: at})
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

func decodeEKDecision(r *http.Request, allowForce bool) (attestapi.EKDecision, error) {
	var d attestapi.EKDecision
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
			return "", forceRequired(attestapi.ReasonEKBoundToOtherHost,
				fmt.Sprintf("the pending EK is bound to host %s, which loses its binding if the EK moves here", inUse.Host),
				`approve with "force": true to move it`)
		}
		if err != nil {
			return "", err
		}
		out := attestapi.Approved{Host: host, Approved: true, EKFingerprint: res.Fingerprint, MovedFrom: res.MovedFrom}
		detail := "approved EK " + res.Fingerprint
		if res.MovedFrom != "" {
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
		writeJSON(w, http.StatusOK, attestapi.Rejected{Host: host, Rejected: true, EKFingerprint: fp})
		return "rejected EK " + fp, nil
	})
}

func (s *server) setHostProfiles(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	// A pointer tells a missing "profiles" (refused) from null (the
	// service's default).
	var body struct {
		Profiles *[]string `json:"profiles"`
	}
	return s.admin(r, RuleHostsProfiles, "host.set_profiles", host, func() (string, error) {
		force, err := forceParam(r)
		if err != nil {
			return "", err
		}
		raw, err := readBody(r)
		if err != nil {
			return "", err
		}
		if err := decodeJSONBytes(raw, &body); err != nil {
			return "", err
		}
		if !hasKey(raw, "profiles") {
			return "", httpErr(http.StatusBadRequest, `"profiles" is required: a list of profile names, [] for any profile, or null for the service's default`, nil)
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
			return "", forceRequired(attestapi.ReasonProfileNotSatisfied, fmt.Sprintf("host %q is trusted, but its latest evidence does not satisfy %s: "+
				"this assignment makes it untrusted", host, quoteList("profile", unmet)), "repeat with force=true to assign anyway")
		}
		if err := s.cfg.Engine.SetHostProfiles(r.Context(), host, profiles); err != nil {
			return "", err
		}
		writeJSON(w, http.StatusOK, attestapi.RequiredProfiles{Host: host, Profiles: profiles})
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

// fromDoc validates a profile from a request body.
func fromDoc(d attestapi.Profile) (*policy.Profile, error) {
	p, err := d.Policy()
	if err != nil {
		return nil, httpErr(http.StatusBadRequest, "profile rejected", err)
	}
	return p, nil
}

// writeLearned answers learn: the profile just stored (p: the learned one,
// or the one it was merged into), when, and what Learn pinned for the
// facts.
func (s *server) writeLearned(w http.ResponseWriter, r *http.Request, code int, p *policy.Profile, l *policy.Learned, fw store.FlatWrite) error {
	sp, err := s.cfg.Store.GetProfile(r.Context(), p.Name)
	if err != nil {
		return err
	}
	at := sp.UpdatedAt
	out := attestapi.Learned{Profile: attestapi.ProfileFrom(p), UpdatedAt: &at, FactPCRs: map[string][]string{},
		AddedPCRs: []int{}, Warnings: l.Warnings, Version: fw.Version, RetiredVersion: fw.Retired, Unchanged: !fw.Changed}
	for pcr, facts := range l.FactPCRs {
		out.FactPCRs[strconv.Itoa(pcr)] = facts
	}
	out.AddedPCRs = append(out.AddedPCRs, l.AddedPCRs...)
	writeJSON(w, code, out)
	return nil
}

// writeStored answers with a profile just stored, when it was stored and
// the versions the write made and retired.
func (s *server) writeStored(w http.ResponseWriter, r *http.Request, code int, p *policy.Profile, fw store.FlatWrite) error {
	sp, err := s.cfg.Store.GetProfile(r.Context(), p.Name)
	if err != nil {
		return err
	}
	at := sp.UpdatedAt
	writeJSON(w, code, attestapi.ProfileBody{Profile: attestapi.ProfileFrom(p), UpdatedAt: &at,
		Version: fw.Version, RetiredVersion: fw.Retired, Unchanged: !fw.Changed})
	return nil
}

// flatDetail is the audit detail of a flat profile write: the version it
// made and the one it retired.
func flatDetail(fw store.FlatWrite) string {
	switch {
	case !fw.Changed:
		return fmt.Sprintf("unchanged; version=%d", fw.Version)
	case fw.Retired != 0:
		return fmt.Sprintf("version=%d state=approved; retired version %d", fw.Version, fw.Retired)
	}
	return fmt.Sprintf("version=%d state=approved", fw.Version)
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// hasKey reports whether the JSON object b has key k at its top level.
func hasKey(b []byte, k string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	_, ok := m[k]
	return ok
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
	out := attestapi.ProfileList{Profiles: []attestapi.ProfileBody{}}
	for _, sp := range sps {
		p, err := parseStored(sp)
		if err != nil {
			return err
		}
		at := sp.UpdatedAt
		out.Profiles = append(out.Profiles, attestapi.ProfileBody{Profile: attestapi.ProfileFrom(p), UpdatedAt: &at, Version: sp.Version})
	}
	writeJSON(w, http.StatusOK, out)
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
	at := sp.UpdatedAt
	writeJSON(w, http.StatusOK, attestapi.ProfileBody{Profile: attestapi.ProfileFrom(p), UpdatedAt: &at, Version: sp.Version})
	return nil
}

func (s *server) putProfile(w http.ResponseWriter, r *http.Request, action, name string, mode store.PutMode) error {
	return s.admin(r, RuleProfilesWrite, action, name, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		var d attestapi.Profile
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
		fw, err := s.cfg.Engine.PutProfile(r.Context(), sp, mode)
		if err != nil {
			return "", err
		}
		code := http.StatusOK
		if mode == store.Create {
			code = http.StatusCreated
		}
		return flatDetail(fw), s.writeStored(w, r, code, p, fw)
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
		force, err := forceParam(r)
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
			return "", forceRequired(attestapi.ReasonHostsRelyOnProfile, fmt.Sprintf("profile %q is relied on by %s: deleting it makes them untrusted "+
				"(or keeps them from being trusted)", name, quoteList("host", relying)), "repeat with force=true to delete it anyway")
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
		// Nothing is stored when a new name would share its Placement trait
		// with an existing profile (PutProfile refuses it too, but only
		// after the profiles before it were stored).
		existing, err := s.cfg.Store.ListProfiles(r.Context())
		if err != nil {
			return "", err
		}
		for _, p := range ps {
			for _, e := range existing {
				if e.Name != p.Name && policy.NameKey(e.Name) == policy.NameKey(p.Name) {
					return "", &store.ProfileNameError{Name: p.Name, Existing: e.Name}
				}
			}
		}
		var (
			names   []string
			details []string
		)
		out := attestapi.Imported{Profiles: []attestapi.ImportedProfile{}}
		for _, p := range ps {
			sp, err := storeProfile(p)
			if err != nil {
				return "", err
			}
			fw, err := s.cfg.Engine.PutProfile(r.Context(), sp, store.Upsert)
			if err != nil {
				return "", err
			}
			names = append(names, p.Name)
			details = append(details, p.Name+": "+flatDetail(fw))
			out.Profiles = append(out.Profiles, attestapi.ImportedProfile{Name: p.Name, Version: fw.Version, RetiredVersion: fw.Retired,
				Created: fw.Created, Unchanged: !fw.Changed})
		}
		out.Imported = nonNil(names)
		writeJSON(w, http.StatusOK, out)
		return "profiles=" + strings.Join(names, ",") + " (" + strings.Join(details, "; ") + ")", nil
	})
}

// learnProfile builds a profile from a host's last verified evidence
// (policy.Learn). With merge, the learned values are added to an existing
// profile of that name (rollouts). Learn also pins the PCRs the learned
// facts are read from unless skip_fact_pcrs is set; the answer lists them
// ("fact_pcrs", "added_pcrs") and any fact left untrustworthy ("warnings").
func (s *server) learnProfile(w http.ResponseWriter, r *http.Request) error {
	var body attestapi.Learn
	b, err := readBody(r)
	if err != nil {
		return err
	}
	r.Body = readCloser{bytesReader(b)}
	_ = decodeJSONBytes(b, &body)
	// A new version is a version change: the versions rule governs it.
	rule, action := RuleProfilesWrite, "profile.learn"
	if body.NewVersion {
		rule, action = RuleVersionsWrite, "profile.version.learn"
	}
	return s.admin(r, rule, action, body.Name, func() (string, error) {
		if _, err := queryParams(r); err != nil {
			return "", err
		}
		if err := decodeJSONBytes(b, &body); err != nil {
			return "", err
		}
		if body.NewVersion && body.Merge {
			return "", httpErr(http.StatusBadRequest, "new_version and merge exclude each other: a version is a complete reference set", nil)
		}
		in, source, err := s.learnInput(r.Context(), &body)
		if err != nil {
			return "", err
		}
		learned, err := policy.Learn(body.Name, in, policy.LearnOptions{PCRs: body.PCRs, Facts: body.Facts,
			SkipFactPCRs: body.SkipFactPCRs, IMA: body.IMA, IMAExclude: body.IMAExclude})
		if err != nil {
			return "", httpErr(http.StatusBadRequest, "cannot learn profile", err)
		}
		p := learned.Profile
		p.Description = body.Description
		if p.Description == "" {
			p.Description = "learned from " + source
		}
		if body.NewVersion {
			return s.learnVersion(w, r, p, learned, source)
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
		fw, err := s.cfg.Engine.PutProfile(r.Context(), sp, mode)
		if err != nil {
			return "", err
		}
		code := http.StatusCreated
		if mode == store.Replace {
			code = http.StatusOK
		}
		return "learned from " + source + "; " + flatDetail(fw), s.writeLearned(w, r, code, p, learned, fw)
	})
}

// learnInput checks what a learn request learns from and returns the
// values: a host's last verified evidence, a new full verification of the
// host with its IMA log (ima), or the replay of a firmware event log
// (event_log; evidence.ReferenceFromEventLog, the verifier's own checks and
// replay). source names it for the description and the audit record.
func (s *server) learnInput(ctx context.Context, body *attestapi.Learn) (policy.Input, string, error) {
	var in policy.Input
	switch {
	case body.Name == "":
		return in, "", httpErr(http.StatusBadRequest, "name is required", nil)
	case body.Host != "" && len(body.EventLog) > 0:
		return in, "", httpErr(http.StatusBadRequest, "host and event_log exclude each other", nil)
	case body.Host == "" && len(body.EventLog) == 0:
		return in, "", httpErr(http.StatusBadRequest, "host or event_log is required", nil)
	case len(body.IMAExclude) > 0 && !body.IMA:
		return in, "", httpErr(http.StatusBadRequest, "ima_exclude needs ima", nil)
	}
	if len(body.EventLog) > 0 {
		if body.IMA {
			return in, "", httpErr(http.StatusBadRequest, "ima needs host: an event log has no IMA measurements", nil)
		}
		for _, i := range body.PCRs {
			if !slices.Contains(evidence.LogPCRs, i) {
				return in, "", httpErr(http.StatusBadRequest,
					fmt.Sprintf("pcrs: PCR %d is not recorded in a firmware event log (PCRs 0-9 are)", i), nil)
			}
		}
		ref, err := evidence.ReferenceFromEventLog(body.EventLog)
		if err != nil {
			return in, "", httpErr(http.StatusBadRequest, "event_log: not a usable firmware event log", err)
		}
		d := sha256.Sum256(body.EventLog)
		return policy.Input{PCRs: ref.PCRs, Boot: ref.Boot}, "event log sha256:" + hex.EncodeToString(d[:8]), nil
	}
	var err error
	if body.IMA {
		in, err = s.cfg.Engine.LearnInputWithIMA(ctx, body.Host)
	} else {
		in, err = s.cfg.Engine.LearnInput(ctx, body.Host)
	}
	switch {
	case errors.Is(err, engine.ErrNoIMA):
		return in, "", httpErr(http.StatusConflict, "host has no verified IMA log to learn from", err)
	case errors.Is(err, engine.ErrNoEvidence) && body.IMA:
		// The new verification's own error says what failed.
		return in, "", httpErr(http.StatusConflict, "host has no verified evidence to learn from", err)
	case errors.Is(err, engine.ErrNoEvidence):
		return in, "", httpErr(http.StatusConflict, "host has no verified evidence to learn from", nil)
	case err != nil:
		return in, "", err
	}
	return in, "host " + body.Host, nil
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
	limit, err := limitParam(q, attestapi.DefaultAuditLimit, attestapi.MaxLimit)
	if err != nil {
		return err
	}
	recs, err := s.cfg.Store.Audit(r.Context(), limit)
	if err != nil {
		return err
	}
	out := attestapi.AuditList{Audit: make([]attestapi.AuditRecord, 0, len(recs))}
	for _, a := range recs {
		out.Audit = append(out.Audit, attestapi.AuditRecord{At: a.At, RequestID: a.RequestID, UserID: a.UserID, ProjectID: a.ProjectID,
			Action: a.Action, Target: a.Target, Outcome: a.Outcome, Detail: a.Detail})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// forceParam reads the optional "force" query parameter, the only one the
// routes that take it accept.
func forceParam(r *http.Request) (bool, error) {
	q, err := queryParams(r, "force")
	if err != nil {
		return false, err
	}
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
