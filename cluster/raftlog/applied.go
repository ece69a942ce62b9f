package raftlog

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// SetApplied records in txn that group has applied the entries up to
// applied.Index (whose term is applied.Term) and that its membership is then
// applied.ConfState. Call it in the transaction that applies those entries to
// the state machine, so that the state and the applied index commit
// atomically; that transaction needs no sync, since the synced log replays
// what a crash loses. The driver restarts a group with raft.Config.Applied
// set to the stored index, and InitialState answers its ConfState.
func SetApplied(txn *badger.Txn, group uint64, applied *pb.SnapshotMetadata) error {
	k, v, err := AppliedRecord(group, applied)
	if err != nil {
		return err
	}
	return txn.Set(k, v)
}

// AppliedRecord is the key and value SetApplied writes, for a state
// machine that writes its transaction through another writer (the
// storage committer's ApplyCommitted) rather than a badger.Txn of its own.
func AppliedRecord(group uint64, applied *pb.SnapshotMetadata) (key, value []byte, err error) {
	b, err := proto.Marshal(pb.EnsureSnapshotMetadata(proto.CloneOf(applied)))
	if err != nil {
		return nil, nil, fmt.Errorf("raftlog: group %d: applied record: %w", group, err)
	}
	return groupKey(prefixApplied, group), b, nil
}

// Applied is group's applied record as committed: zero index, term and an
// empty ConfState if none was set.
func (s *Store) Applied(group uint64) (*pb.SnapshotMetadata, error) {
	m, _, err := s.readMeta(prefixApplied, group)
	return m, err
}

// SetSnapshotMarker records in txn that a snapshot described by meta is being
// received into group's state: its data is only partly written. The
// snapshot's [Write.ApplySnapshot] clears it, in the transaction that resets
// the log.
func SetSnapshotMarker(txn *badger.Txn, group uint64, meta *pb.SnapshotMetadata) error {
	b, err := proto.Marshal(pb.EnsureSnapshotMetadata(proto.CloneOf(meta)))
	if err != nil {
		return fmt.Errorf("raftlog: group %d: snapshot marker: %w", group, err)
	}
	return txn.Set(groupKey(prefixSnapshot, group), b)
}

// SnapshotMarker is the marker of a snapshot group was receiving, if one was
// set and not yet cleared: after a restart, the group's state machine holds
// part of that snapshot.
func (s *Store) SnapshotMarker(group uint64) (meta *pb.SnapshotMetadata, ok bool, err error) {
	return s.readMeta(prefixSnapshot, group)
}

// readMeta reads a SnapshotMetadata record; a missing one reads as zero.
func (s *Store) readMeta(p byte, group uint64) (*pb.SnapshotMetadata, bool, error) {
	m := &pb.SnapshotMetadata{}
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(groupKey(p, group))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(func(b []byte) error { return proto.Unmarshal(b, m) })
	})
	if err != nil {
		return nil, false, fmt.Errorf("raftlog: group %d: read %c record: %w", group, p, err)
	}
	return pb.EnsureSnapshotMetadata(m), found, nil
}

// AppliedIn is group's applied record as txn reads it (zero if none was
// set): for a reader that needs the record and the state machine's keys
// from one point in time, as a snapshot does.
func AppliedIn(txn *badger.Txn, group uint64) (*pb.SnapshotMetadata, error) {
	m := &pb.SnapshotMetadata{}
	item, err := txn.Get(groupKey(prefixApplied, group))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return pb.EnsureSnapshotMetadata(m), nil
	case err != nil:
		return nil, fmt.Errorf("raftlog: group %d: read applied record: %w", group, err)
	}
	if err := item.Value(func(b []byte) error { return proto.Unmarshal(b, m) }); err != nil {
		return nil, fmt.Errorf("raftlog: group %d: read applied record: %w", group, err)
	}
	return pb.EnsureSnapshotMetadata(m), nil
}
