package istioglobal

import (
	"fmt"
	"slices"
)

// build is a table built from scratch: every entry applied to a new engine at once, as the
// plugin does at its first sync.
func build(entries []Entry, c tableConfig, serial uint32) *Table {
	t, _ := buildEngine(entries, c, serial)
	return t
}

func buildEngine(entries []Entry, c tableConfig, serial uint32) (*Table, *engine) {
	e := newEngine(c)
	var s snapshots
	e.apply(s.diff(entries))
	t := e.commit(func() uint32 { return serial })
	if len(builtBy) > 64 { // benchmarks build many
		clear(builtBy)
	}
	builtBy[t] = e
	return t, e
}

// builtBy is the engine of the tables build made lately, for tests that look at its problems
// and counts.
var builtBy = map[*Table]*engine{}

func problemsOf(t *Table) []Problem { return builtBy[t].allProblems() }

func statsOf(t *Table) tableStats { return builtBy[t].statistics() }

// allProblems is every problem the engine holds, in a stable order.
func (e *engine) allProblems() []Problem {
	var out []Problem
	for _, r := range e.entries {
		out = append(out, r.problems...)
	}
	for _, h := range e.hosts {
		out = append(out, h.problems...)
	}
	for _, ps := range e.unreadable {
		out = append(out, ps...)
	}
	slices.SortFunc(out, func(a, b Problem) int {
		return cmpString(fmt.Sprint(a), fmt.Sprint(b))
	})
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// igProblems is the problems of a plugin's table: its builder's, or a test's build.
func igProblems(ig *IstioGlobal) []Problem {
	if ig.engine != nil {
		return ig.engine.allProblems()
	}
	return problemsOf(ig.table.Load())
}
