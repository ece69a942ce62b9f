package cluster

import (
	"fmt"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Proposal ids do not repeat within a run: after 2^32 of them (a week
// of a busy node) the next is still new. (A 32-bit counter under a
// 32-bit prefix came back to the first id here.)
func TestProposalIDsDoNotRepeat(t *testing.T) {
	d := &Driver{next: 0x1234_5678_0000_0000}
	first := d.nextID()
	d.next = first + 1<<32 - 2 // as if 2^32-2 more were handed out
	seen := map[uint64]bool{first: true}
	for range 4 {
		id := d.nextID()
		if seen[id] {
			t.Fatalf("id %#x handed out twice", id)
		}
		seen[id] = true
	}
	d.next = ^uint64(0) // the counter wraps after 2^64: 0 is never an id
	if id := d.nextID(); id == 0 {
		t.Fatal("id 0 (no one waits for it) handed out")
	}
}

// An applied entry answers a waiting proposal only if it is of the term
// the proposal was appended in: an entry of another incarnation (or
// node) that happens to carry the same id is not the proposal's.
func TestAnEntryOfAnotherTermAnswersNoProposal(t *testing.T) {
	const id = 42
	var outcome []error
	p := &proposal{group: 1, id: id, term: 7, done: func(err error) { outcome = append(outcome, err) }}
	g := &group{id: 1, waiting: map[uint64]*proposal{id: p}, reads: map[uint64]*proposal{}, snapPending: map[uint64]uint64{}}
	d := &Driver{groups: map[uint64]*group{1: g}, status: map[uint64]GroupStatus{}}
	d.finishApply(applyJob{group: 1, mine: []uint64{id}, mineTerms: []uint64{6}})
	if len(outcome) != 0 || g.waiting[id] == nil {
		t.Fatalf("an entry of term 6 answered the proposal of term 7: %v", outcome)
	}
	d.finishApply(applyJob{group: 1, mine: []uint64{id}, mineTerms: []uint64{7}})
	if len(outcome) != 1 || outcome[0] != nil || g.waiting[id] != nil {
		t.Fatalf("its own entry did not answer the proposal: %v", outcome)
	}
}

// The applier and the persister write side by side: a stop can leave
// the applied record of entries on disk before the HardState that
// commits them. A node restarted so starts (raft refuses applied beyond
// commit) and applies nothing twice.
func TestARestartWithAppliedAheadOfCommit(t *testing.T) {
	c := newTestCluster(t, 3, 1)
	var want []string
	for i := range 10 {
		v := fmt.Sprintf("before-%d", i)
		c.put(1, v)
		want = append(want, v)
	}
	c.converged(1, want)
	// A follower: the in-memory log keeps no membership (a restarted
	// node learns it from the leader), so a lone node would not elect.
	n := c.peers[0]
	if n == c.leader(1, 0) {
		n = c.peers[1]
	}
	c.kill(n)
	st := c.logs[n].st[1]
	hs, _, err := st.InitialState()
	if err != nil {
		t.Fatal(err)
	}
	applied, _ := c.sms[n].Applied(1)
	if hs.GetCommit() < applied || applied < 5 {
		t.Fatalf("commit %d, applied %d: not the state this test starts from", hs.GetCommit(), applied)
	}
	// As the crash leaves it: the commits of the last five applied
	// entries never written.
	if err := st.SetHardState(&pb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(applied - 5)}); err != nil {
		t.Fatal(err)
	}
	c.start(n)
	for i := range 10 {
		v := fmt.Sprintf("after-%d", i)
		c.put(1, v)
		want = append(want, v)
	}
	c.converged(1, want)
}
