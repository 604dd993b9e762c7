package istioglobal

import "github.com/coredns-istio/coredns-istio/internal/logonce"

// problemSet is every problem of the input, kept by its owners (an entry, a host, a source's
// unreadable files) and counted by text, so that each is logged once when it first appears,
// however often its owner changes, and the skipped metric costs nothing to keep.
type problemSet struct {
	logged logonce.Set
	counts map[[2]string]int // kind, reason → problems
}

func newProblemSet() problemSet { return problemSet{counts: map[[2]string]int{}} }

// replace makes next the problems of the owner that had *owner.
func (s *problemSet) replace(owner *[]Problem, next []Problem) {
	if len(*owner) == 0 && len(next) == 0 {
		return
	}
	for _, p := range *owner {
		s.count(p, -1)
	}
	for _, p := range next {
		s.count(p, 1)
	}
	*owner = next
}

func (s *problemSet) count(p Problem, d int32) {
	s.logged.Add(p.String(), d)
	kr := [2]string{p.Kind, p.Reason}
	if s.counts[kr] += int(d); s.counts[kr] <= 0 {
		delete(s.counts, kr)
	}
}

// logNew logs the problems that appeared since it last ran.
func (s *problemSet) logNew() {
	n := 0
	s.logged.Flush(func(t string) {
		if n++; n <= maxLoggedPerBuild {
			log.Warning(t)
		}
	})
	if n > maxLoggedPerBuild {
		log.Warningf("and %d more problems of the same build, not logged: see coredns_istioglobal_skipped (and, with txt on, the names' TXT)", n-maxLoggedPerBuild)
	}
}

// maxLoggedPerBuild bounds the problems one build logs: one cause (a bulk load of bad entries,
// a store that cannot be written) can affect thousands of hosts at once.
const maxLoggedPerBuild = 20
