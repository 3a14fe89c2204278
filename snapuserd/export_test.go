package snapuserd

// SetPayloadCacheLimit sets s's payload-cache budget in bytes (tests use a
// small one to keep misses, evictions and concurrent loads frequent).
func SetPayloadCacheLimit(s *Snapshot, n int) { s.units.setLimit(n) }

// SetHybridMaxSegments lowers PlanHybridFile's segment bound; the returned
// function restores it.
func SetHybridMaxSegments(n int) func() {
	old := hybridMaxSegments
	hybridMaxSegments = n
	return func() { hybridMaxSegments = old }
}
