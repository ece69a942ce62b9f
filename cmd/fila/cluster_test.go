package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/config"
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
	require.Regexp(t, `(?m)^1\s+.+\s+127\.0\.0\.1:0\s+5$`, r.stdout, "node 1 leads all 5 groups")

	r = fila(t, node, "", "cluster", "partitions")
	require.Zero(t, r.code, r.stderr)
	require.Regexp(t, `(?m)^0 \(meta\)\s+1\s+\d+\s+\d+\s+\d+\s+1$`, r.stdout)
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
	r = fila(t, node, "", "cluster", "transfer-leader", "1")
	require.Equal(t, 2, r.code)

	single := startBroker(t)
	r = fila(t, single, "", "cluster", "transfer-leader", "1", "1")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "[cluster] is not enabled")
}
