package daemon

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is stamped by release builds (make build, make deb):
//
//	go build -ldflags "-X github.com/trustpool/trustpool/internal/daemon.version=0.1.0"
var version string

// Version is the stamped version, else the module version from the build
// information ("(devel)" for a plain go build in the source tree).
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(unknown)"
}

// VersionLine is what -version prints: the name, the version and the build
// details that matter when reporting a problem (Go version, platform, the
// commit when the build recorded one, cgo, the race detector).
func VersionLine(name string) string {
	details := []string{runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		s := map[string]string{}
		for _, kv := range bi.Settings {
			s[kv.Key] = kv.Value
		}
		if rev := s["vcs.revision"]; rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if s["vcs.modified"] == "true" {
				rev += "-dirty"
			}
			details = append(details, "commit "+rev)
		}
		if s["CGO_ENABLED"] == "1" {
			details = append(details, "cgo")
		}
		if s["-race"] == "true" {
			details = append(details, "race detector")
		}
	}
	return fmt.Sprintf("%s %s (%s)", name, Version(), strings.Join(details, ", "))
}
