package logonce

import (
	"slices"
	"testing"
)

func flushed(s *Set) []string {
	var got []string
	s.Flush(func(t string) { got = append(got, t) })
	slices.Sort(got)
	return got
}

func TestAddLogsOnAppearance(t *testing.T) {
	var s Set
	s.Add("a", 1)
	s.Add("a", 1) // a second owner
	s.Add("b", 1)
	s.Add("b", -1) // came and went before a Flush: never logged
	if got := flushed(&s); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("first flush %q", got)
	}
	s.Add("a", -1) // one owner still has it
	s.Add("a", 1)
	if got := flushed(&s); len(got) != 0 {
		t.Fatalf("a problem still present was logged again: %q", got)
	}
	s.Add("a", -2)
	if got := flushed(&s); len(got) != 0 {
		t.Fatalf("a vanished problem logged: %q", got)
	}
	s.Add("a", 1)
	if got := flushed(&s); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("a problem that came back: %q, want it logged again", got)
	}
}

func TestReplace(t *testing.T) {
	var s Set
	s.Replace([]string{"x", "y", "x"})
	if got := flushed(&s); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("first %q", got)
	}
	s.Replace([]string{"y", "z"})
	if got := flushed(&s); !slices.Equal(got, []string{"z"}) {
		t.Fatalf("second %q, want only the new one", got)
	}
	s.Replace(nil)
	s.Replace([]string{"x"})
	if got := flushed(&s); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("third %q", got)
	}
}
