package istioglobal

// nameBufSize holds a name of the longest wire length (255 octets) in presentation format
// unless it is full of escapes; a longer one simply grows onto the heap.
const nameBufSize = 256

// lower returns name lower-cased (ASCII only, as DNS compares names) in buf, or on the heap
// when it does not fit, and whether any letter changed.
func lower(buf *[nameBufSize]byte, name string) (b []byte, folded bool) {
	b = buf[:0]
	if len(name) > len(buf) {
		b = make([]byte, 0, len(name))
	}
	b = append(b, name...)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
			folded = true
		}
	}
	return b, folded
}

// matchZone returns the index of the most specific of zones that contains qname, or -1.
func matchZone(zones []string, qname string) int {
	best := -1
	for i, z := range zones {
		if inZone(qname, z) && (best < 0 || len(z) > len(zones[best])) {
			best = i
		}
	}
	return best
}

// inZone reports whether qname is zone (lower case) or below it, on label boundaries,
// comparing ASCII letters without case.
func inZone(qname, zone string) bool {
	if zone == "." {
		return true
	}
	if len(qname) < len(zone) || !equalFold(qname[len(qname)-len(zone):], zone) {
		return false
	}
	rest := qname[:len(qname)-len(zone)]
	return len(rest) == 0 || rest[len(rest)-1] == '.' && !escaped(rest, len(rest)-1)
}

// equalFold reports whether s equals lower (lower case) but for the case of ASCII letters.
func equalFold(s, lower string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// nextLabel returns the offset of the label after the one at off in a presentation-format
// name, honouring escapes (a\.b is one label), and whether off was the last label.
func nextLabel(name []byte, off int) (int, bool) {
	for i := off; i < len(name); i++ {
		switch name[i] {
		case '\\':
			i++ // the escaped character (or the first of \DDD's digits) is not a separator
		case '.':
			if i+1 >= len(name) {
				return len(name), true
			}
			return i + 1, false
		}
	}
	return len(name), true
}

// escaped reports whether the byte at i is preceded by an odd number of backslashes.
func escaped(name string, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && name[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}
