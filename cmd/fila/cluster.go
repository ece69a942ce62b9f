package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

var clusterSubcommands = map[string]subcommandSpec{
	"status":     {synopsis: "cluster status   (the members, the groups each leads, groups without a leader)", json: true},
	"nodes":      {synopsis: "cluster nodes   (each member: client and internal address, groups it leads)", json: true},
	"partitions": {synopsis: "cluster partitions   (every raft group: leader, term, commit and applied index)", json: true},
	// Leader transfer (issue 25).
	"transfer-leader": {synopsis: "cluster transfer-leader PARTITION NODE   (PARTITION: a group id, 0 or meta for the meta group; answers once NODE leads it)",
		min: 2, max: 2, json: true},
}

// clusterCmd shows the answering node's view of its cluster
// (GetClusterStatus).
func clusterCmd(ctx context.Context, g global, args []string, e env) int {
	sub, pos, code, ok := subcommand("cluster", args, &e, clusterSubcommands)
	if !ok {
		return code
	}
	if run, ok := clusterMemberCommands[sub]; ok {
		return run(ctx, g, e, pos)
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		resp, err := admin.GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
		if err != nil || e.json {
			return e.showErr(resp, err)
		}
		if !resp.GetEnabled() {
			fmt.Fprintln(e.stdout, "a single node: [cluster] is not enabled")
			return nil
		}
		switch sub {
		case "status":
			printClusterSummary(e.stdout, resp)
			printClusterNodes(e.stdout, resp)
		case "nodes":
			printClusterNodes(e.stdout, resp)
		default:
			printClusterGroups(e.stdout, resp)
		}
		return nil
	})
}

func printClusterSummary(out io.Writer, resp *filav1.GetClusterStatusResponse) {
	var leaderless, elsewhere []uint64
	for _, grp := range resp.GetGroups() {
		switch {
		case !heldHere(grp):
			elsewhere = append(elsewhere, grp.GetGroupId())
		case grp.GetLeaderNodeId() == 0:
			leaderless = append(leaderless, grp.GetGroupId())
		}
	}
	active, removed := 0, 0
	for _, n := range resp.GetNodes() {
		if n.GetRemoved() {
			removed++
		} else {
			active++
		}
	}
	members := "members"
	if active == 1 {
		members = "member"
	}
	if removed > 0 {
		members += fmt.Sprintf(" (and %d removed)", removed)
	}
	fmt.Fprintf(out, "as node %d sees it: %d %s, %d groups (the meta group and %d partitions)",
		resp.GetNodeId(), active, members, len(resp.GetGroups()), max(len(resp.GetGroups())-1, 0))
	switch {
	case len(leaderless) == 0 && len(elsewhere) == 0:
		fmt.Fprint(out, ", every group has a leader")
	case len(leaderless) == 0:
		fmt.Fprint(out, ", every group held here has a leader")
	default:
		fmt.Fprintf(out, "; without a leader: groups %v", leaderless)
	}
	if len(elsewhere) > 0 {
		fmt.Fprintf(out, "; not held here (ask a replica): groups %v", elsewhere)
	}
	fmt.Fprintln(out)
}

// heldHere says whether the answering node holds a replica of grp: a
// group it holds always has a voter, and one it does not hold (a
// replication factor below the node count, or a node taken out of it)
// comes with no members, no term, and at most the leader it learnt.
func heldHere(grp *filav1.ClusterGroupStatus) bool {
	return grp.GetGroupId() == 0 || len(grp.GetVoterIds()) > 0
}

func printClusterNodes(out io.Writer, resp *filav1.GetClusterStatusResponse) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tCLIENT\tINTERNAL\tLEADS\tROLE")
	for _, n := range resp.GetNodes() {
		client := n.GetClientAddr()
		if client == "" {
			client = "(not registered)"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\n", n.GetNodeId(), client, n.GetInternalAddr(), n.GetGroupsLed(), nodeRole(n))
	}
	_ = w.Flush()
}

func printClusterGroups(out io.Writer, resp *filav1.GetClusterStatusResponse) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "GROUP\tLEADER\tTERM\tCOMMIT\tAPPLIED\tVOTERS\tLEARNERS")
	for _, grp := range resp.GetGroups() {
		name := fmt.Sprint(grp.GetGroupId())
		if grp.GetGroupId() == 0 {
			name = "0 (meta)"
		}
		leader := fmt.Sprint(grp.GetLeaderNodeId())
		if !heldHere(grp) {
			if grp.GetLeaderNodeId() == 0 {
				leader = "unknown"
			} else {
				leader += " (learnt)"
			}
			fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t(not held here)\t-\n", name, leader)
			continue
		}
		if grp.GetLeaderNodeId() == 0 {
			leader = "none"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", name, leader, grp.GetTerm(), grp.GetCommitIndex(), grp.GetAppliedIndex(),
			idList(grp.GetVoterIds()), idList(grp.GetLearnerIds()))
	}
	_ = w.Flush()
}

// Leader transfer (issue 25).

// transferLeaderCmd moves a group's leadership (TransferLeader): any node
// takes it and forwards it to the group's leader.
func transferLeaderCmd(ctx context.Context, g global, e env, pos []string) int {
	group, err := parseGroup(pos[0])
	if err != nil {
		return usageErr(e, "cluster transfer-leader: PARTITION %q: %v", pos[0], err)
	}
	node, err := nodeArg("transfer-leader", "NODE", pos[1])
	if err != nil {
		return usageErr(e, "%v", err)
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		resp, err := admin.TransferLeader(ctx, &filav1.TransferLeaderRequest{GroupId: group, NodeId: node})
		if err != nil || e.json {
			return e.showErr(resp, err)
		}
		fmt.Fprintf(e.stdout, "group %s: node %d leads it now (term %d)\n", pos[0], node, resp.GetTerm())
		return nil
	})
}

// parseGroup reads a raft group's name: its id, or "meta" for group 0.
func parseGroup(s string) (uint64, error) {
	if s == "meta" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want a group id (0 or meta: the meta group; 1..partitions)")
	}
	return n, nil
}
