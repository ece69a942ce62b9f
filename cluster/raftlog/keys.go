package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

const (
	prefixEntry    = 'r'
	prefixState    = 'h'
	prefixApplied  = 'a'
	prefixSnapshot = 's'
	sep            = 0x00
)

// groupKey is <p> 0x00 <group u64 BE>: the key of a group's h, a or s record,
// and the prefix of its r keys.
func groupKey(p byte, group uint64) []byte {
	k := make([]byte, 10, 18)
	k[0], k[1] = p, sep
	binary.BigEndian.PutUint64(k[2:], group)
	return k
}

func entryKey(group, index uint64) []byte {
	return binary.BigEndian.AppendUint64(groupKey(prefixEntry, group), index)
}

// entryIndex is the index in an r key of the group whose prefix it has.
func entryIndex(key []byte) (uint64, error) {
	if len(key) != 18 {
		return 0, fmt.Errorf("raftlog: entry key of %d bytes, want 18", len(key))
	}
	return binary.BigEndian.Uint64(key[10:]), nil
}

// logState is what the h record holds: the bounds of the log and the
// HardState. The log is the entries (base, last]; baseTerm is the term of
// entry base, kept for matching after the entry itself is gone.
type logState struct {
	base, baseTerm, last uint64
	hs                   *pb.HardState // nil until one is set
}

const stateVersion = 1

// encode is version, base, baseTerm, last (u64 BE each), a byte saying
// whether a HardState follows, then the HardState in protobuf.
func (s logState) encode() ([]byte, error) {
	b := make([]byte, 0, 64)
	b = append(b, stateVersion)
	b = binary.BigEndian.AppendUint64(b, s.base)
	b = binary.BigEndian.AppendUint64(b, s.baseTerm)
	b = binary.BigEndian.AppendUint64(b, s.last)
	if s.hs == nil {
		return append(b, 0), nil
	}
	b = append(b, 1)
	return proto.MarshalOptions{}.MarshalAppend(b, s.hs)
}

func decodeState(b []byte) (logState, error) {
	const head = 1 + 3*8 + 1
	if len(b) < head || b[0] != stateVersion {
		return logState{}, errors.New("raftlog: log state record is not version 1")
	}
	s := logState{
		base:     binary.BigEndian.Uint64(b[1:]),
		baseTerm: binary.BigEndian.Uint64(b[9:]),
		last:     binary.BigEndian.Uint64(b[17:]),
	}
	if s.last < s.base {
		return logState{}, fmt.Errorf("raftlog: log state has last index %d below its base %d", s.last, s.base)
	}
	if b[25] == 1 {
		s.hs = &pb.HardState{}
		if err := proto.Unmarshal(b[head:], s.hs); err != nil {
			return logState{}, fmt.Errorf("raftlog: hard state: %w", err)
		}
	}
	return s, nil
}
