package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

func TestClusterCommands(t *testing.T) {
	t.Parallel()
	single := startBroker(t)
	r := fila(t, single, "", "cluster", "status")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "a single node: [cluster] is not enabled")

	node := startBroker(t, func(c *config.Config) {
		c.Cluster.Enabled, c.Cluster.NodeID, c.Cluster.Partitions = true, 1, 4
		c.Cluster.InternalListenAddr, c.Cluster.InitialMembers = "127.0.0.1:0", []string{"1=127.0.0.1:0"}
	})
	r = fila(t, node, "", "cluster", "status")
	require.Zero(t, r.code, r.stderr)
	// A one-node cluster serves once it leads all of its groups.
	require.Contains(t, r.stdout, "as node 1 sees it: 1 member, 5 groups (the meta group and 4 partitions), every group has a leader")
	require.Regexp(t, `(?m)^1\s+.+\s+127\.0\.0\.1:0\s+5\s+voter in 5$`, r.stdout, "node 1 leads all 5 groups, and votes in them")

	r = fila(t, node, "", "cluster", "partitions")
	require.Zero(t, r.code, r.stderr)
	require.Regexp(t, `(?m)^0 \(meta\)\s+1\s+\d+\s+\d+\s+\d+\s+1\s+-$`, r.stdout, "voter 1, no learner")
	require.Regexp(t, `(?m)^4\s+1\s+`, r.stdout)

	r = fila(t, node, "", "cluster", "nodes", "--json")
	require.Zero(t, r.code, r.stderr)
	var got struct {
		Enabled bool `json:"enabled"`
		Nodes   []struct {
			GroupsLed int `json:"groups_led"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got), r.stdout)
	require.True(t, got.Enabled)
	require.Len(t, got.Nodes, 1)
	require.Equal(t, 5, got.Nodes[0].GroupsLed)

	// Membership: a node recorded, then removed; the last member stays,
	// and a removed id is never added again.
	r = fila(t, node, "", "cluster", "add-node", "2", "127.0.0.1:1")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "node 2 recorded at 127.0.0.1:1")
	r = fila(t, node, "", "cluster", "nodes")
	require.Regexp(t, `(?m)^2\s+\(not registered\)\s+127\.0\.0\.1:1\s+0\s+`, r.stdout)
	r = fila(t, node, "", "cluster", "add-node", "2", "127.0.0.1:2")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "node 2 is a member at 127.0.0.1:1, not 127.0.0.1:2")
	r = fila(t, node, "", "cluster", "remove-node", "2")
	require.Zero(t, r.code, r.stderr)
	r = fila(t, node, "", "cluster", "status")
	require.Regexp(t, `(?m)^2\s+.+\s+removed \(`, r.stdout)
	require.Contains(t, r.stdout, "1 member (and 1 removed)")
	r = fila(t, node, "", "cluster", "add-node", "2", "127.0.0.1:1")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "node 2 was removed from the cluster")
	r = fila(t, node, "", "cluster", "remove-node", "1")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "node 1 is the cluster's last member")
	r = fila(t, node, "", "cluster", "remove-node", "0")
	require.Equal(t, 2, r.code, r.stderr)
	// An address no member could dial is refused before anything is
	// recorded (a recorded id cannot be moved, only removed for good).
	for addr, why := range map[string]string{"0.0.0.0:7000": "names no host", "10.0.0.5:": `port ""`, ":7000": "names no host", "h:abc": `port "abc"`, "h:0": `port "0"`, "nohost": "missing port"} {
		r = fila(t, node, "", "cluster", "add-node", "3", addr)
		require.NotZero(t, r.code, addr)
		require.Contains(t, r.stderr, "internal_addr: must be host:port", addr)
		require.Contains(t, r.stderr, why, addr)
	}
	r = fila(t, single, "", "cluster", "add-node", "2", "127.0.0.1:1")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "a single node has no members to change")

	r = fila(t, node, "", "cluster", "leaders")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `unknown cluster subcommand "leaders"`)
}

// Leader transfer (issue 25): on a one-node cluster the only voter leads
// already; the arguments are checked before any call.
func TestClusterTransferLeaderCommand(t *testing.T) {
	t.Parallel()
	node := startBroker(t, func(c *config.Config) {
		c.Cluster.Enabled, c.Cluster.NodeID, c.Cluster.Partitions = true, 1, 2
		c.Cluster.InternalListenAddr, c.Cluster.InitialMembers = "127.0.0.1:0", []string{"1=127.0.0.1:0"}
	})
	r := fila(t, node, "", "cluster", "transfer-leader", "meta", "1")
	require.Zero(t, r.code, r.stderr)
	require.Regexp(t, `group meta: node 1 leads it now \(term [1-9]\d*\)`, r.stdout)
	r = fila(t, node, "", "cluster", "transfer-leader", "2", "1", "--json")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, `"term":`)
	r = fila(t, node, "", "cluster", "transfer-leader", "2", "5")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "node_id: 5 is not a member")
	r = fila(t, node, "", "cluster", "transfer-leader", "x", "1")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `PARTITION "x"`)
	r = fila(t, node, "", "cluster", "transfer-leader", "1", "0")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `cluster transfer-leader: NODE "0": want a node id > 0`)
	r = fila(t, node, "", "cluster", "transfer-leader", "99", "1")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "group_id: 99 is no group")
	r = fila(t, node, "", "cluster", "transfer-leader", "1")
	require.Equal(t, 2, r.code)

	single := startBroker(t)
	r = fila(t, single, "", "cluster", "transfer-leader", "1", "1")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "[cluster] is not enabled")
}

// A group the answering node holds no replica of reads as not held here,
// with the leader it learnt, and the summary counts it apart from the
// groups without a leader.
func TestAGroupNotHeldHereIsSaidSo(t *testing.T) {
	resp := &filav1.GetClusterStatusResponse{NodeId: 2, Groups: []*filav1.ClusterGroupStatus{
		{GroupId: 0, LeaderNodeId: 1, Term: 3, CommitIndex: 9, AppliedIndex: 9, VoterIds: []uint64{1, 2, 3}},
		{GroupId: 1, LeaderNodeId: 0, Term: 4, CommitIndex: 7, AppliedIndex: 7, VoterIds: []uint64{1, 2, 3}},
		{GroupId: 2, LeaderNodeId: 3},
		{GroupId: 3},
	}}
	var groups, summary strings.Builder
	printClusterGroups(&groups, resp)
	printClusterSummary(&summary, resp)
	rows := strings.Split(strings.TrimSpace(groups.String()), "\n")
	require.Len(t, rows, 5)
	require.Equal(t, []string{"1", "none", "4", "7", "7", "1,2,3", "-"}, strings.Fields(rows[2]))
	require.Equal(t, []string{"2", "3", "(learnt)", "-", "-", "-", "(not", "held", "here)", "-"}, strings.Fields(rows[3]))
	require.Equal(t, []string{"3", "unknown", "-", "-", "-", "(not", "held", "here)", "-"}, strings.Fields(rows[4]))
	require.Equal(t, "as node 2 sees it: 0 members, 4 groups (the meta group and 3 partitions); without a leader: groups [1]; not held here (ask a replica): groups [2 3]\n", summary.String())
}
