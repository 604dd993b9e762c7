package istioglobal

// maxJournalNames bounds the journal: a secondary further behind gets a whole zone (AXFR).
const maxJournalNames = 1 << 12

// nameChange is a name a generation changed, with its node in the generation before (nil when
// the name is new; the name is gone when the new generation has no node for it).
type nameChange struct {
	name string
	old  *node
}

// journal keeps the differences between consecutive generations, oldest first, for IXFR
// (RFC 1995): a generation's changes, diffed against the next generation's nodes, are what
// changed between the serials. Each published Table holds the journal as it was then: entries
// are only ever appended or dropped from the front, never changed, so that a transfer reads
// its Table's copy without a lock. (The dropped ones stay in the backing array until append
// moves it: at most about as many as the journal holds.)
type journal struct {
	gens  []journalGen
	names int
}

type journalGen struct {
	from, serial uint32 // the serials of the generations before and after the changes
	changes      []nameChange
}

func (j *journal) add(from, serial uint32, changes []nameChange) {
	if len(changes) > maxJournalNames {
		// A bulk change: its difference would cost more than the whole zone.
		*j = journal{}
		return
	}
	j.gens = append(j.gens, journalGen{from: from, serial: serial, changes: changes})
	j.names += weight(changes)
	for j.names > maxJournalNames {
		j.names -= weight(j.gens[0].changes)
		j.gens = j.gens[1:]
	}
}

// weight is what a generation counts against maxJournalNames: its names, and at least one, so
// that generations that changed no name (only what TXT reads) cannot pile up.
func weight(changes []nameChange) int { return max(1, len(changes)) }
