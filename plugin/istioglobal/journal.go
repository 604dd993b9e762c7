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
// changed between the serials. The TXT facts are not in it: they follow the conflicts too.
type journal struct {
	gens  []journalGen
	names int
}

type journalGen struct {
	serial  uint32 // of the generation the changes lead to
	changes []nameChange
}

func (j *journal) add(serial uint32, changes []nameChange) {
	j.gens = append(j.gens, journalGen{serial: serial, changes: changes})
	j.names += len(changes)
	for j.names > maxJournalNames && len(j.gens) > 1 {
		j.names -= len(j.gens[0].changes)
		j.gens[0] = journalGen{}
		j.gens = j.gens[1:]
	}
}
