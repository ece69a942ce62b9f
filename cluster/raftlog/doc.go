// Package raftlog keeps the Raft logs of many groups in one badger DB, the
// same DB that holds the node's state machine, and serves each group's log to
// go.etcd.io/raft/v3 as a [raft.Storage].
//
// # Key layout
//
// Beside the state machine's keys (q, m, l, c, d: see package storage):
//
//	r 0x00 <group u64 BE> <index u64 BE> → raftpb.Entry
//	h 0x00 <group u64 BE>                → the group's log state: the log's
//	                                       bounds (the index and term before
//	                                       its first entry, its last index)
//	                                       and its raftpb.HardState
//	a 0x00 <group u64 BE>                → raftpb.SnapshotMetadata: the applied
//	                                       index, its term and the ConfState
//	s 0x00 <group u64 BE>                → raftpb.SnapshotMetadata of a
//	                                       snapshot being received
//
// # Which entries exist
//
// The h record alone says which entries form the log: the r keys in
// (base, last]. An r key outside those bounds is garbage that nothing reads;
// the write that puts it outside deletes it (a crash may leave some, which a
// later append overwrites or a later compaction deletes). Every change of
// the bounds is one write of h, so a truncation of a conflicting suffix, a
// snapshot's reset of the log and a compaction are each atomic however many
// r keys they delete, and a crash between any two badger transactions leaves
// a log that some earlier moment had: never an entry a committed truncation
// removed (the etcd-io/etcd#22442 class of bug, where a WAL resurrected
// truncated entries after a restart).
//
// Within one [Write] the badger transactions, if it needs more than one, are
// ordered so that this holds at every boundary: before entries at or below
// the durable last index are overwritten, h moves last below them; new
// entries are written before h moves last over them; a snapshot's reset of h
// and its applied record are in one transaction.
//
// # Durability
//
// The DB is meant to be opened with SyncWrites false. The driver commits one
// [Write] per loop, for all its groups, and then calls badger's DB.Sync, which
// makes that write and every earlier unsynced transaction (the apply
// transactions of earlier loops included) durable. Only then may it send
// messages that depend on the write. The apply transaction writes the state
// machine's changes and [SetApplied] together without a sync: the synced log
// replays them after a crash.
//
// [Store.Compact] deletes entries below an index that the caller must know to
// be applied and covered by a sync (see its doc): otherwise a crash could lose
// both the unsynced applied state and the entries that would replay it.
package raftlog
