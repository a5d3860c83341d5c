package oslo

import "time"

// SetDeclarationRefresh sets how often consumers re-declare, until the
// returned func runs.
func SetDeclarationRefresh(d time.Duration) (restore func()) {
	old := declarationRefresh
	declarationRefresh = d
	return func() { declarationRefresh = old }
}
