package main

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// The membership verbs of `fila cluster` (AddNode, RemoveNode), beside
// the status ones.
var clusterMemberSubcommands = map[string]subcommandSpec{
	"add-node":    {synopsis: "cluster add-node ID INTERNAL_ADDR   (record a member: the groups add it as a learner, then a voter)", min: 2, max: 2},
	"remove-node": {synopsis: "cluster remove-node ID   (take a member out of every group; the id is never a member again)", min: 1, max: 1},
}

var clusterMemberCommands = map[string]func(ctx context.Context, g global, e env, pos []string) int{
	"add-node":    addNodeCmd,
	"remove-node": removeNodeCmd,
	// Leader transfer (cluster.go).
	"transfer-leader": transferLeaderCmd,
}

func init() { maps.Copy(clusterSubcommands, clusterMemberSubcommands) }

func addNodeCmd(ctx context.Context, g global, e env, pos []string) int {
	id, err := nodeArg("add-node", "ID", pos[0])
	if err != nil {
		return usageErr(e, "%v", err)
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		if _, err := admin.AddNode(ctx, &filav1.AddNodeRequest{NodeId: id, InternalAddr: pos[1]}); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "node %d recorded at %s: start it with cluster.join; `fila cluster status` shows it become a voter where it ranks (every group when replication_factor covers all members)\n", id, pos[1])
		return nil
	})
}

func removeNodeCmd(ctx context.Context, g global, e env, pos []string) int {
	id, err := nodeArg("remove-node", "ID", pos[0])
	if err != nil {
		return usageErr(e, "%v", err)
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		if _, err := admin.RemoveNode(ctx, &filav1.RemoveNodeRequest{NodeId: id}); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "node %d marked removed: the groups let it go; `fila cluster status` shows it in none\n", id)
		return nil
	})
}

// nodeArg reads the node id argument name of `fila cluster verb`.
func nodeArg(verb, name, s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("cluster %s: %s %q: want a node id > 0", verb, name, s)
	}
	return id, nil
}

// nodeRole is how many groups a member votes in and learns in, or that it
// was removed.
func nodeRole(n *filav1.ClusterNodeStatus) string {
	role := fmt.Sprintf("voter in %d", n.GetVoterIn())
	if l := n.GetLearnerIn(); l > 0 {
		role += fmt.Sprintf(", learner in %d", l)
	}
	if n.GetRemoved() {
		role = "removed (" + role + ")"
	}
	return role
}

// idList is ids comma-separated, "-" for none.
func idList(ids []uint64) string {
	if len(ids) == 0 {
		return "-"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ",")
}
