package oslo

import (
	"strconv"
	"strings"
)

// VersionCompatible reports whether an endpoint implementing
// endpointVersion can serve a request for requested, by oslo's
// version_is_compatible: same major, requested minor ≤ endpoint minor, and
// when the minors are equal requested patch ≤ endpoint patch (a missing
// patch is 0; parts after the third are ignored). An empty endpointVersion
// accepts everything (oslo's None); an empty or malformed requested version
// is incompatible (oslo raises, which also means no dispatch). Callers
// compare against Request.EffectiveVersion, which is "1.0" when the request
// named none.
func VersionCompatible(endpointVersion, requested string) bool {
	if endpointVersion == "" {
		return true
	}
	req, ok := parseVersion(requested)
	if !ok {
		return false
	}
	imp, ok := parseVersion(endpointVersion)
	if !ok {
		return false
	}
	switch {
	case req[0] != imp[0]:
		return false
	case req[1] > imp[1]:
		return false
	case req[1] == imp[1] && req[2] > imp[2]:
		return false
	}
	return true
}

// parseVersion reads major.minor[.patch[...]] of decimal numbers.
func parseVersion(v string) ([3]int, bool) {
	var out [3]int
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return out, false
	}
	for i := 0; i < 3 && i < len(parts); i++ {
		p := parts[i]
		if p == "" || len(p) > 9 || strings.TrimLeft(p, "0123456789") != "" {
			return out, false
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return out, false
		}
		out[i] = n
	}
	return out, true
}
