package istioglobal

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A relist marks only what differs from the store, deletions included, and counts as a relist;
// the first list does not.
func TestEntryStoreReplace(t *testing.T) {
	var marked []string
	s := &entryStore{items: map[string]*cachedEntry{}, changed: func(keys ...string) { marked = append(marked, keys...) }}
	a, b := serviceEntry("foo", "a", []string{"a.bar.global"}, "240.0.0.1"), serviceEntry("foo", "b", []string{"b.bar.global"}, "240.0.0.2")
	a.ResourceVersion, b.ResourceVersion = "1", "1"
	before := testutil.ToFloat64(relists)
	if err := s.Replace([]any{a, b}, "1"); err != nil {
		t.Fatal(err)
	}
	slices.Sort(marked)
	if !s.synced.Load() || !slices.Equal(marked, []string{"foo/a", "foo/b"}) {
		t.Fatalf("first list: synced %v, marked %v", s.synced.Load(), marked)
	}
	marked = nil
	a2 := a.DeepCopy()
	a2.ResourceVersion = "2"
	if err := s.Replace([]any{a2}, "2"); err != nil { // a changed, b deleted meanwhile
		t.Fatal(err)
	}
	slices.Sort(marked)
	if !slices.Equal(marked, []string{"foo/a", "foo/b"}) || s.get("foo/b") != nil {
		t.Fatalf("relist marked %v; b still stored: %v", marked, s.get("foo/b") != nil)
	}
	if d := testutil.ToFloat64(relists) - before; d != 1 {
		t.Errorf("relists counted %v, want 1", d)
	}
}
