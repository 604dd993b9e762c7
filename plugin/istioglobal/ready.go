package istioglobal

// Ready implements the ready.Readiness interface: ready once a table built from fully synced
// sources is being served, this instance's or, after a reload, its predecessor's.
func (ig *IstioGlobal) Ready() bool { return ig.table.Load() != nil }
