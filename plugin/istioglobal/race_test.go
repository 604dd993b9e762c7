//go:build race

package istioglobal

// The race detector's shadow memory inflates heap accounting.
func init() { raceEnabled = true }
