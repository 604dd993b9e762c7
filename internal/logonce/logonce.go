// Package logonce logs a problem when it appears, not each time it is seen again: the plugin's
// skipped input, the VIP store's conflicts and the stubdomain watcher's warnings. A problem that
// goes away and comes back is logged again.
package logonce

// Set is the problems present now, each counted by the owners that have it (an entry, a host, a
// ConfigMap). The zero value is empty and ready; a Set is for one goroutine.
type Set struct {
	present map[string]int32 // text → owners that have it
	before  map[string]int32 // texts touched since the last Flush: their count then
}

// Add counts d more owners (d < 0: fewer) of the problem text.
func (s *Set) Add(text string, d int32) {
	if s.present == nil {
		s.present, s.before = map[string]int32{}, map[string]int32{}
	}
	if _, ok := s.before[text]; !ok {
		s.before[text] = s.present[text]
	}
	if s.present[text] += d; s.present[text] <= 0 {
		delete(s.present, text)
	}
}

// Replace makes texts the problems present, each with one owner: for callers that see every
// problem at once.
func (s *Set) Replace(texts []string) {
	now := make(map[string]bool, len(texts))
	for _, t := range texts {
		if !now[t] {
			now[t] = true
			if s.present[t] == 0 {
				s.Add(t, 1)
			}
		}
	}
	for t := range s.present {
		if !now[t] {
			s.Add(t, -s.present[t])
		}
	}
}

// Flush logs, with log, each problem that appeared since the last Flush.
func (s *Set) Flush(log func(string)) {
	for text, n := range s.before {
		if n == 0 && s.present[text] > 0 {
			log(text)
		}
	}
	clear(s.before)
}
