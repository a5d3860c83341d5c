package store

// SetPruneBatch sets the prune batch size until the returned func runs.
func SetPruneBatch(n int) (restore func()) {
	old := pruneBatch
	pruneBatch = n
	return func() { pruneBatch = old }
}

// LatestSchema is the version the migrations lead to.
var LatestSchema = len(migrations)
