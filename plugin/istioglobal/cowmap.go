package istioglobal

import (
	"hash/maphash"
	"maps"
	"net/netip"
)

// shardCount is the number of shards of a cowMap. A change copies only the shards it touches,
// so an event costs a few shards of names/shardCount entries each: at 100k ServiceEntries
// (about 400k names) a shard is ~200 entries, a few microseconds to copy, and a generation's
// shard array itself is 16 KiB.
const shardCount = 2048

var hashSeed = maphash.MakeSeed()

func hashName(s string) uint64                      { return maphash.String(hashSeed, s) }
func hashNameBytes(b []byte) uint64                 { return maphash.Bytes(hashSeed, b) }
func hashAddr(a netip.Addr) uint64                  { return maphash.Comparable(hashSeed, a) }
func shardOf(h uint64) int                          { return int(h & (shardCount - 1)) }
func newShards[K comparable, V any]() *cowMap[K, V] { return &cowMap[K, V]{} }

// cowMap is one generation of a sharded copy-on-write map. A published generation is never
// modified: readers index its shards without a lock, and the next generation shares every
// shard that it did not change.
type cowMap[K comparable, V any] struct {
	shards [shardCount]map[K]V
	len    int
}

// cowWriter builds the next generation of a cowMap from the last one, copying a shard the
// first time the generation changes it.
type cowWriter[K comparable, V any] struct {
	hash  func(K) uint64
	cur   *cowMap[K, V]
	owned [shardCount]bool // shards of cur that no published generation shares
}

func newCOWWriter[K comparable, V any](hash func(K) uint64) *cowWriter[K, V] {
	return &cowWriter[K, V]{hash: hash, cur: newShards[K, V]()}
}

func (w *cowWriter[K, V]) get(k K) (V, bool) {
	v, ok := w.cur.shards[shardOf(w.hash(k))][k]
	return v, ok
}

func (w *cowWriter[K, V]) set(k K, v V) {
	s := w.own(shardOf(w.hash(k)))
	if _, ok := s[k]; !ok {
		w.cur.len++
	}
	s[k] = v
}

func (w *cowWriter[K, V]) delete(k K) {
	i := shardOf(w.hash(k))
	if _, ok := w.cur.shards[i][k]; !ok {
		return
	}
	delete(w.own(i), k)
	w.cur.len--
}

func (w *cowWriter[K, V]) own(i int) map[K]V {
	if !w.owned[i] {
		if w.cur.shards[i] == nil {
			w.cur.shards[i] = make(map[K]V)
		} else {
			w.cur.shards[i] = maps.Clone(w.cur.shards[i])
		}
		w.owned[i] = true
	}
	return w.cur.shards[i]
}

// publish returns the generation built so far, which must not change any more, and starts the
// next one as a copy of it.
func (w *cowWriter[K, V]) publish() *cowMap[K, V] {
	p := w.cur
	next := *p
	w.cur = &next
	w.owned = [shardCount]bool{}
	return p
}
