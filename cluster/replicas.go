package cluster

import (
	"cmp"
	"slices"
)

// ReplicasOf is which of the nodes ids hold group when each partition has
// rf replicas (docs/cluster.md, "Replication factor"): the meta group on
// every node, a partition on the rf nodes ranked highest by rendezvous
// hashing of (group, node), best first; every node of ids when rf is 0 or
// at least their number. Every node computes the same answer from the
// same ids, and a node joining or leaving moves only the partitions it
// ranks in (about rf/len(ids) of them): the others keep their replicas.
func ReplicasOf(group uint64, ids []uint64, rf int) []uint64 {
	out := slices.Clone(ids)
	if group == MetaGroup || rf <= 0 || rf >= len(ids) {
		slices.Sort(out)
		return out
	}
	slices.SortFunc(out, func(a, b uint64) int {
		// Highest weight first; a tie (a hash collision) by id.
		return cmp.Or(cmp.Compare(rendezvous(group, b), rendezvous(group, a)), cmp.Compare(a, b))
	})
	return out[:rf]
}

// rendezvous is node's weight for group: splitmix64's finalizer over both
// ids (small consecutive ids must still rank as if at random). It is part
// of the cluster's state, every node must rank alike across versions:
// never change it.
func rendezvous(group, node uint64) uint64 {
	return mix64(mix64(group) ^ node)
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
