package attestapi

import "github.com/trustpool/trustpool/internal/policy"

// ProfileFrom returns a profile of package policy in the API's form.
func ProfileFrom(p *policy.Profile) Profile {
	d := Profile{Name: p.Name, Description: p.Description, Facts: p.Facts, PCRs: p.PCRs}
	if p.IMA != nil {
		d.IMA = &IMARules{AllowViolations: p.IMA.AllowViolations, Exclude: p.IMA.Exclude, Allowlist: p.IMA.Allowlist}
	}
	return d
}

// Policy returns the profile as package policy's, validated by
// policy.Profile.Validate (the errors name each problem).
func (d Profile) Policy() (*policy.Profile, error) {
	p := &policy.Profile{Name: d.Name, Description: d.Description, Facts: d.Facts, PCRs: d.PCRs}
	if d.IMA != nil {
		p.IMA = &policy.IMARules{AllowViolations: d.IMA.AllowViolations, Exclude: d.IMA.Exclude, Allowlist: d.IMA.Allowlist}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}
