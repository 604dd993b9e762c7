package istioglobal

import (
	"fmt"
	"sync"
	"sync/atomic"

	"k8s.io/client-go/tools/cache"
)

// entryStore is where a reflector keeps what it lists and watches: each ServiceEntry is turned
// into its cachedEntry as it arrives, and its key is marked changed for the next rebuild. A
// relist (after an outage, or a watch that expired with 410 Gone) marks only the entries that
// differ from what was stored, including the ones deleted meanwhile; the table serves on
// throughout.
type entryStore struct {
	mu      sync.RWMutex
	items   map[string]*cachedEntry // namespace/name →
	synced  atomic.Bool             // an initial list has been stored
	changed func(keys ...string)
}

var _ cache.TransformingStore = (*entryStore)(nil)

// Transformer makes a watch-list's temporary store (the initial list streamed as watch events)
// keep cachedEntries too, not 100k whole API objects.
func (s *entryStore) Transformer() cache.TransformFunc { return toCachedEntry }

func (s *entryStore) Add(obj any) error    { return s.put(obj) }
func (s *entryStore) Update(obj any) error { return s.put(obj) }
func (s *entryStore) Resync() error        { return nil }

func (s *entryStore) put(obj any) error {
	ce, key, err := cached(obj)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.items[key] = ce
	s.mu.Unlock()
	s.changed(key)
	return nil
}

func (s *entryStore) Delete(obj any) error {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.items, key)
	s.mu.Unlock()
	s.changed(key)
	return nil
}

func (s *entryStore) Replace(list []any, _ string) error {
	next := make(map[string]*cachedEntry, len(list))
	for _, obj := range list {
		ce, key, err := cached(obj)
		if err != nil {
			return err
		}
		next[key] = ce
	}
	s.mu.Lock()
	old := s.items
	s.items = next
	s.mu.Unlock()
	var keys []string
	for key, ce := range next {
		if o, ok := old[key]; !ok || o.resourceVersion != ce.resourceVersion {
			keys = append(keys, key)
		}
	}
	for key := range old {
		if _, ok := next[key]; !ok {
			keys = append(keys, key)
		}
	}
	if s.synced.Swap(true) {
		relists.Inc() // a full list after the first: an outage, an expired watch
	}
	s.changed(keys...) // also when nothing changed: the first list makes the source synced
	return nil
}

// get is the entry stored under key, or nil.
func (s *entryStore) get(key string) *Entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ce := s.items[key]; ce != nil {
		return &ce.Entry
	}
	return nil
}

// cached converts what the reflector hands over (a ServiceEntry, or a cachedEntry that a
// watch-list's temporary store converted already) and returns its key.
func cached(obj any) (*cachedEntry, string, error) {
	converted, err := toCachedEntry(obj)
	if err != nil {
		return nil, "", err
	}
	ce, ok := converted.(*cachedEntry)
	if !ok {
		return nil, "", fmt.Errorf("not a ServiceEntry: %T", obj)
	}
	return ce, ce.Namespace + "/" + ce.Name, nil
}
