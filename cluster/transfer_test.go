package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// A transfer moves the group's leadership to the voter named and returns
// once the old leader sees it lead; what was acknowledged before it stays.
func TestTransferLeaderMovesLeadership(t *testing.T) {
	c := newTestCluster(t, 3, 1, 2)
	var want []string
	for i := range 10 {
		v := fmt.Sprintf("before-%d", i)
		c.put(1, v)
		want = append(want, v)
	}
	from := c.leader(1, 0)
	to := from%3 + 1
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := c.node(from).TransferLeader(ctx, 1, to); err != nil {
		t.Fatalf("transfer group 1 from %d to %d: %v", from, to, err)
	}
	if st, _ := c.node(from).Status(1); st.Leader != to || st.Leading {
		t.Fatalf("after the transfer node %d sees leader %d (leading %v), want %d", from, st.Leader, st.Leading, to)
	}
	if got := c.leader(1, from); got != to {
		t.Fatalf("node %d leads group 1, want %d", got, to)
	}
	c.put(1, "after")
	c.converged(1, append(want, "after"))
	// The new leader transferring to itself is done at once.
	if err := c.node(to).TransferLeader(ctx, 1, to); err != nil {
		t.Fatalf("transfer to the leader itself: %v", err)
	}
}

// A transfer asked of a follower names the leader and does nothing; one to
// a node that is no voter is refused; one that cannot complete ends with
// the caller's context, the old leader leading on.
func TestTransferLeaderRefusals(t *testing.T) {
	c := newTestCluster(t, 3, 1)
	leader := c.leader(1, 0)
	follower := leader%3 + 1
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	var nl *NotLeaderError
	if err := c.node(follower).TransferLeader(ctx, 1, follower); !errors.As(err, &nl) {
		t.Fatalf("transfer asked of follower %d: %v, want a NotLeaderError", follower, err)
	}
	if err := c.node(leader).TransferLeader(ctx, 1, 7); !errors.Is(err, ErrNotVoter) {
		t.Fatalf("transfer to node 7: %v, want ErrNotVoter", err)
	}
	if err := c.node(leader).TransferLeader(ctx, 9, follower); err == nil {
		t.Fatal("transfer of a group the node is not in: no error")
	}
	// The target cut off: raft abandons the transfer after an election
	// timeout; the caller's deadline says so.
	c.isolate(follower, true)
	short, stop := context.WithTimeout(ctx, 20*20*time.Millisecond)
	defer stop()
	if err := c.node(leader).TransferLeader(short, 1, follower); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("transfer to a cut-off node: %v, want the deadline", err)
	}
	c.isolate(follower, false)
	c.put(1, "still served") // the leader (or an elected one) takes proposals again
}

// Progress, on the leader, names every voter and its log's end.
func TestProgressOnTheLeader(t *testing.T) {
	c := newTestCluster(t, 3, 1)
	c.put(1, "x")
	leader := c.leader(1, 0)
	ctx := context.Background()
	deadline := time.Now().Add(patience)
	for {
		commit, peers, err := c.node(leader).Progress(ctx, 1)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			leader = c.leader(1, 0)
			continue
		}
		caught := 0
		for _, p := range peers {
			if p.Match >= commit && p.Active && p.Replicating {
				caught++
			}
		}
		if len(peers) != 3 {
			t.Fatalf("progress names %d voters: %+v", len(peers), peers)
		}
		if caught == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every voter caught up: commit %d, %+v", commit, peers)
		}
		time.Sleep(5 * time.Millisecond) // polls raft's progress; the outcome is its
	}
	var nl *NotLeaderError
	if _, _, err := c.node(leader%3+1).Progress(ctx, 1); !errors.As(err, &nl) {
		t.Fatalf("progress on a follower: %v", err)
	}
}
