package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/cluster"
	"github.com/fila-dev/filad/cluster/transport"
	"github.com/fila-dev/filad/config"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
)

// clusterNode is this node's part of a cluster: its replica (the store,
// the raft log, the driver), the transport to the other members, and the
// internal listener that serves it.
type clusterNode struct {
	replica   *cluster.Replica
	transport *transport.Transport
	grpc      *grpc.Server
	lis       net.Listener
	control   *http.Server // the fault rules, in tests only
	// placement answers the broker where each family is served.
	placement *cluster.Placement
	// system is the actor system once it runs: leadership changes and
	// meta entries applied here are told to its broker.
	system atomic.Pointer[actors.System]
}

// tell sends msg to the broker, once the actors run (before, their start
// reads the state afresh).
func (n *clusterNode) tell(msg any) {
	if sys := n.system.Load(); sys != nil {
		sys.Send(sys.Broker(), msg)
	}
}

// attach hands the running actor system to the node, and tells its broker
// the placement now, in case leadership moved while the actors started.
func (n *clusterNode) attach(sys *actors.System) {
	n.system.Store(sys)
	n.tell(&actors.PlacementChanged{})
	n.tell(&actors.MetaApplied{})
}

// clusterMarker is the file that says a data directory holds a cluster
// node's replica (the store with a raft log beside it), and whose.
const clusterMarker = "CLUSTER"

// openCluster opens this node's replica in the data directory, serves the
// transport on the internal address, and waits until the node may serve:
// with one member, until it leads every group (a second or two, the
// first election).
func openCluster(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *clusterNode, err error) {
	cc := cfg.Cluster
	members, err := cc.ParseMembers()
	if err != nil {
		return nil, err
	}
	if err := checkClusterMarker(cfg.Storage.DataDir, cc.NodeID); err != nil {
		return nil, err
	}
	n := &clusterNode{}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	var faults *transport.Faults
	if cc.FaultControlAddr != "" {
		faults = &transport.Faults{}
	}
	var driver *cluster.Driver // set below; the transport delivers to it
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, append(transport.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	}
	n.transport, err = transport.New(transport.Options{
		NodeID: cc.NodeID,
		Deliver: func(_ uint64, msgs []*clusterv1.GroupMessage) {
			driver.Step(msgs)
		},
		Dial:        dial,
		Unreachable: func(peer uint64) { driver.Unreachable(peer) },
		Faults:      faults,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	peers := make([]uint64, len(members))
	clientAddrs, peerAddrs := map[uint64]string{}, map[uint64]string{}
	for i, m := range members {
		peers[i] = m.ID
		clientAddrs[m.ID] = m.ClientAddr
		peerAddrs[m.ID] = m.Addr
	}
	if n.replica, err = cluster.OpenReplica(cluster.ReplicaOptions{
		Dir: cfg.Storage.DataDir, NodeID: cc.NodeID, Peers: peers, Partitions: cc.Partitions,
		Tick: cc.Tick(), ElectionTicks: cc.ElectionTicks, HeartbeatTicks: cc.HeartbeatTicks,
		Send:    func(to uint64, msgs []*clusterv1.GroupMessage) { n.transport.Send(to, msgs...) },
		Leading: func(uint64, uint64) { n.tell(&actors.PlacementChanged{}) },
		// Where a queue led elsewhere is served changes with that
		// leader: the Directory's hint must follow it.
		LeaderChanged: func(uint64) { n.tell(&actors.PlacementChanged{}) },
		MetaApplied:   func() { n.tell(&actors.MetaApplied{}) },
		ClientAddrs:   clientAddrs,
		Logger:        log,
		// Snapshots: fetched from the leader's internal port.
		PeerAddrs: peerAddrs, Dial: dial,
		SnapshotEntries: cc.SnapshotEntries, SnapshotRate: cc.SnapshotRateMiB << 20,
	}); err != nil {
		return nil, err
	}
	driver = n.replica.Driver
	n.placement = cluster.NewPlacement(n.replica, clientAddrs)
	for _, m := range members {
		if m.ID != cc.NodeID {
			if err := n.transport.SetPeer(m.ID, m.Addr); err != nil {
				return nil, err
			}
		}
	}
	if n.lis, err = net.Listen("tcp", cc.InternalListenAddr); err != nil {
		return nil, fmt.Errorf("cluster.internal_listen_addr: %w", err)
	}
	n.grpc = grpc.NewServer(transport.ServerOptions()...)
	if !config.IsLoopback(cc.InternalListenAddr) {
		log.Warn("the cluster's internal port has no TLS and no authentication yet: anyone who reaches it can take part in the raft groups; keep it on a private network",
			slog.String("internal_listen_addr", cc.InternalListenAddr))
	}
	n.transport.Register(n.grpc)
	n.replica.RegisterSnapshots(n.grpc)
	go func() { _ = n.grpc.Serve(n.lis) }()
	if faults != nil {
		lis, err := net.Listen("tcp", cc.FaultControlAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster.fault_control_addr: %w", err)
		}
		n.control = &http.Server{Handler: faults.ControlHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = n.control.Serve(lis) }()
	}
	if err := n.awaitReady(ctx, cc, len(members)); err != nil {
		return nil, err
	}
	log.Info("cluster node ready", slog.Uint64("node_id", cc.NodeID), slog.Int("members", len(members)),
		slog.Int("partitions", cc.Partitions), slog.String("internal_listen_addr", n.lis.Addr().String()))
	return n, nil
}

// awaitReady waits until the node may serve: with one member, until it
// leads every group (after an election timeout at the first start, at
// once after a restart); with more, until every group has a leader and
// this node has applied the meta group as far as it knew it committed,
// so that its broker starts with the queues the cluster has. It polls
// the driver's status, and gives up only with ctx or after many election
// timeouts (the other members may not be up yet).
func (n *clusterNode) awaitReady(ctx context.Context, cc config.Cluster, members int) error {
	bound := time.Now().Add(100 * time.Duration(cc.ElectionTicks) * cc.Tick())
	var metaCommit uint64
	for g := uint64(0); g <= uint64(cc.Partitions); {
		st, _ := n.replica.Driver.Status(g)
		if g == cluster.MetaGroup && st.Leader != 0 && metaCommit == 0 {
			metaCommit = max(st.Commit, 1)
		}
		ready := st.Leading
		if members > 1 {
			ready = st.Leader != 0 && (g != cluster.MetaGroup || st.Applied >= metaCommit)
		}
		if ready {
			g++
			continue
		}
		if time.Now().After(bound) {
			return fmt.Errorf("cluster: group %d has no leader after %v", g, 100*time.Duration(cc.ElectionTicks)*cc.Tick())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cc.Tick()):
		}
	}
	return nil
}

// close stops serving the other nodes, then the driver and the store.
func (n *clusterNode) close() error {
	if n.control != nil {
		_ = n.control.Close()
	}
	if n.grpc != nil {
		n.grpc.Stop()
	}
	if n.transport != nil {
		n.transport.Close()
	}
	if n.replica != nil {
		return n.replica.Close()
	}
	return nil
}

// checkClusterMarker refuses a data directory of the other kind: a
// single node's store holds no raft log, and a replica's state would be
// overwritten by its log's replay if opened without it. A fresh
// directory becomes this node's.
func checkClusterMarker(dir string, node uint64) error {
	path := filepath.Join(dir, clusterMarker)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		got, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil || got != node {
			return fmt.Errorf("cluster: %s belongs to node %q, not node %d", dir, strings.TrimSpace(string(b)), node)
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if stored, err := holdsStore(dir); err != nil || stored {
		if err == nil {
			err = fmt.Errorf("cluster: %s holds a single node's store; a cluster node starts on an empty directory (restore a backup into the cluster instead)", dir)
		}
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strconv.FormatUint(node, 10)+"\n"), 0o600)
}

// refuseClusterDir refuses to open a cluster node's directory as a
// single node.
func refuseClusterDir(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, clusterMarker)); err == nil {
		return fmt.Errorf("storage: %s is a cluster node's replica; start it with [cluster] enabled", dir)
	}
	return nil
}

// holdsStore reports whether dir holds a badger store already.
func holdsStore(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, "MANIFEST"))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}
