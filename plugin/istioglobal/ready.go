package istioglobal

// Ready implements the ready.Readiness interface: ready once a table built from fully
// synced sources is being served.
func (ig *IstioGlobal) Ready() bool { return ig.table.Load() != nil }
