// Package istioglobal is a CoreDNS plugin that answers Istio's multicluster names
// (name.namespace.global) from ServiceEntries.
//
// # Data path
//
// Sources (source_kube.go, source_files.go) hand the builder (builder.go) the entries that
// changed; the engine (engine.go, engine_publish.go) applies them and publishes a new
// generation of the Table (table.go), which ServeDNS (istioglobal.go) reads with one atomic
// load and answers from (reply.go), building each record from the table's compact data.
//
// # The engine: what an event costs
//
// An event costs work in proportion to the entry and the names it touches, never to the table:
//   - a host is recomputed from all the entries that hold it, oldest first: a host's cost is the
//     number of its entries;
//   - an address's holders are kept in host order (the order of each host's oldest entry), so its
//     reverse name and the conflicts its holders' TXT lists are recomputed from one list;
//   - empty non-terminals are reference counts on every ancestor of a name that is more than one;
//   - TXT facts are built when asked for, from the host and the generation's conflicts, so a host
//     joining a shared address changes one list, not every holder's record;
//   - VIPs: a deterministic allocation is recomputed over the hosts that want one, and only when
//     an event changes those hosts, their order or a reservation in the ranges (engine.allocate).
//
// # Structure, and why
//
// The names of a generation live in a sharded copy-on-write map (cowmap.go): 2048 Go maps, each
// copied the first time a generation changes it, under one shard array per generation. A query
// costs one hash of the name and one Go map probe; a persistent trie or HAMT (from a library, or
// our own) would cost several dependent pointer loads per lookup and more per node, on the path
// every query takes, while a change here copies a few shards of ~200 names at 100k entries (a
// few microseconds each). Published nodes are never modified: the engine copies the node it
// changes (engine.edit) and the generation shares the rest. What only the engine needs (which
// entries hold a host, which hosts hold an address, the reservations) lives in plain maps it
// alone touches. Each generation records the names it changed with their previous nodes
// (journal.go): the difference between consecutive serials. Each Table carries the journal as
// it was when published, so a zone transfer (transfer.go) reads one generation and its history
// without a lock, and the NOTIFYs that follow a publish run in their own goroutine (notify.go).
//
// The from-scratch build that preceded the engine is kept in the tests as its oracle
// (oracle_test.go, property_test.go).
package istioglobal
