package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/cluster"
	"github.com/fila-dev/filad/cluster/transport"
	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/otlpexport"
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
	// self is this node as the initial members name it; stopRegister
	// ends its registration in the meta group (register).
	self         cluster.NodeInfo
	stopRegister context.CancelFunc
	registered   chan struct{}
	// registerEvery bounds each try of the registration: an election
	// timeout, so that a try outlasts a meta leader's election.
	registerEvery time.Duration
	// metrics are the raft and forwarding instruments; the driver is their
	// Observer.
	metrics *telemetry.ClusterMetrics
	// internal serves the calls other nodes forward on grpc, once the
	// gateway is bound to it; peers are the connections this node
	// forwards over.
	internal *gateway.Internal
	peers    *peerConns
	// guard binds the node id an internal call claims to the caller's
	// certificate.
	guard *peerGuard
	// membership keeps each group's members what the node table says
	// (the groups this node leads).
	membership *cluster.Membership
	// stopRefresh ends the placement's asking who leads the partitions
	// this node holds no replica of.
	stopRefresh func()
	// tls, with [server.tls], checks the members' certificates; the node
	// table keeps its members current (syncPeers).
	tls *tlsFiles
	// driver is the replica's, once it is open: syncPeers reads the
	// groups' memberships from it, on the driver's goroutine too.
	driver     atomic.Pointer[cluster.Driver]
	partitions int
	syncMu     sync.Mutex // one syncPeers at a time
	// Leader balance (issue 25): balancer is nil with
	// cluster.leader_balance off; groups are every group's id, election
	// the election timeout.
	balancer *cluster.Balancer
	groups   []uint64
	election time.Duration
}

// peerGuard checks that the caller of an internal call may speak for the
// node it claims to be: with [server.tls], that its certificate names that
// member's host (and its node id, if it names any: verifyMemberID).
// Without TLS there is no identity to check, and it admits every claim
// (docs/security.md).
type peerGuard struct {
	tls     *tlsFiles // nil: plaintext
	nodes   *cluster.Nodes
	log     *slog.Logger
	metrics *telemetry.ClusterMetrics
	logged  transport.LogOnce
}

// check admits ctx's caller as node claimed, or answers PermissionDenied
// naming the claim and what the certificate names; a refusal is counted
// (fila.cluster.peer.refused, by call) and logged once per claimed id.
func (g *peerGuard) check(ctx context.Context, claimed uint64, call string) error {
	return g.checkWith(ctx, claimed, call, g.tls.verifyMemberID)
}

// checkWith is check with verify judging the certificate (with TLS). A
// node removed from the cluster is refused its forwarded calls and joins
// with or without TLS; its raft stream is taken, and its messages are
// dropped per group once the group let it go (clusterNode.leaving), so
// that a leader being removed can still hand its groups over.
func (g *peerGuard) checkWith(ctx context.Context, claimed uint64, call string, verify func(*x509.Certificate, uint64) error) error {
	var err error
	switch {
	case call != telemetry.PeerCallRaft && g.nodes.Removed(claimed):
		err = errors.New("it was removed from the cluster")
	case g.tls == nil:
		return nil
	default:
		err = errors.New("the caller presented no certificate")
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
				err = verify(info.State.PeerCertificates[0], claimed)
			}
		}
	}
	if err == nil {
		return nil
	}
	g.metrics.PeerRefused(ctx, call)
	if g.logged.First(claimed) {
		attrs := []any{slog.String("call", call), slog.Uint64("claimed_node", claimed), slog.Any("error", err)}
		if p, ok := peer.FromContext(ctx); ok {
			attrs = append(attrs, slog.String("remote", p.Addr.String()))
		}
		g.log.Warn("cluster: an internal call refused: the caller may not speak for the node it claims (logged once per node id)", attrs...)
	}
	return status.Errorf(codes.PermissionDenied, "cluster: the caller may not speak for node %d: %v", claimed, err)
}

// register records this node's client address in the meta group, in the
// background: the other nodes name it to clients whose queue this node
// leads. It is told the address the client port is bound to (or the
// advertised one).
func (n *clusterNode) register(clientAddr string, log *slog.Logger) {
	if host, _, err := net.SplitHostPort(clientAddr); err == nil {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			log.Warn("cluster: this node's client address names no host, so other nodes cannot name it to clients; set cluster.advertise_client_addr",
				slog.String("client_addr", clientAddr))
		}
	}
	self := n.self
	self.ClientAddr = clientAddr
	ctx, cancel := context.WithCancel(context.Background())
	n.stopRegister = cancel
	go func() {
		defer close(n.registered)
		err := n.replica.Register(ctx, self, n.registerEvery)
		switch {
		case err == nil:
			log.Info("cluster: node registered", slog.Uint64("node_id", self.ID), slog.String("client_addr", clientAddr))
		case ctx.Err() == nil:
			log.Warn("cluster: node not registered", slog.Any("error", err))
		}
	}()
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
func openCluster(ctx context.Context, cfg config.Config, opts Options, tlsFiles *tlsFiles, tel *otlpexport.Handle, log *slog.Logger) (_ *clusterNode, err error) {
	cc := cfg.Cluster
	members, err := cc.ParseMembers()
	if err != nil {
		return nil, err
	}
	joining := len(cc.JoinAddrs()) > 0
	if joining {
		// No initial members: the node learns them from its Join's answer,
		// then from the node table its meta group applies.
		members = []config.Member{{ID: cc.NodeID, Addr: cc.InternalListenAddr}}
	}
	if err := checkClusterMarker(cfg.Storage.DataDir, cc.NodeID); err != nil {
		return nil, err
	}
	n := &clusterNode{registerEvery: cc.ElectionTimeout(), registered: make(chan struct{}), internal: &gateway.Internal{}, partitions: cc.Partitions}
	if n.metrics, err = telemetry.NewClusterMetrics(tel.MeterProvider); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	var faults *transport.Faults
	if cc.FaultControlAddr != "" {
		faults = &transport.Faults{}
	}
	initial := make([]cluster.NodeInfo, len(members))
	for i, m := range members {
		initial[i] = cluster.NodeInfo{ID: m.ID, InternalAddr: m.Addr}
		if m.ID == cc.NodeID {
			n.self = initial[i]
		}
	}
	nodes := cluster.NewNodes(initial)
	n.tls = tlsFiles
	n.guard = &peerGuard{tls: tlsFiles, nodes: nodes, log: log, metrics: n.metrics}
	n.peers = newPeerConns(cc.NodeID, nodes, faults, func(addr string) grpc.DialOption { return peerDialCreds(tlsFiles, addr) })
	var driver *cluster.Driver // set below; the transport delivers to it
	// Raft messages and snapshot fetches dial the members alike: mutual
	// TLS with [server.tls], checked against the host dialed.
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, append(transport.DialOptions(), peerDialCreds(tlsFiles, addr))...)
	}
	n.transport, err = transport.New(transport.Options{
		NodeID: cc.NodeID,
		Deliver: func(from uint64, msgs []*clusterv1.GroupMessage) {
			if nodes.Removed(from) {
				msgs = leaving(driver, from, msgs)
			}
			driver.Step(msgs)
		},
		Dial:        dial,
		Unreachable: func(peer uint64) { driver.Unreachable(peer) },
		Faults:      faults,
		Logger:      log,
		Authenticate: func(ctx context.Context, claimed uint64) error {
			return n.guard.check(ctx, claimed, telemetry.PeerCallRaft)
		},
		AdmitProposal: cluster.AdmitForwarded,
	})
	if err != nil {
		return nil, err
	}
	var peers []uint64 // a joining node's groups start empty: a leader adds it
	if !joining {
		for _, m := range members {
			peers = append(peers, m.ID)
		}
	}
	if n.replica, err = cluster.OpenReplica(cluster.ReplicaOptions{
		Dir: cfg.Storage.DataDir, NodeID: cc.NodeID, Peers: peers, Partitions: cc.Partitions, ReplicationFactor: cc.ReplicationFactor,
		Tick: cc.Tick(), ElectionTicks: cc.ElectionTicks, HeartbeatTicks: cc.HeartbeatTicks,
		Send:    func(to uint64, msgs []*clusterv1.GroupMessage) { n.transport.Send(to, msgs...) },
		Leading: func(uint64, uint64) { n.tell(&actors.PlacementChanged{}) },
		// Where a queue led elsewhere is served changes with that
		// leader: the Directory's hint must follow it.
		LeaderChanged: func(uint64) { n.tell(&actors.PlacementChanged{}) },
		MetaApplied:   func() { n.tell(&actors.MetaApplied{}) },
		Nodes:         nodes,
		Observer:      n.metrics,
		Tracer:        tel.TracerProvider.Tracer(telemetry.ScopeName, trace.WithInstrumentationVersion(telemetry.Version)),
		Logger:        log,
		// Snapshots: fetched from the leader's internal port.
		Dial:            dial,
		SnapshotEntries: cc.SnapshotEntries, SnapshotRate: cc.SnapshotRateMiB << 20,
	}); err != nil {
		return nil, err
	}
	driver = n.replica.Driver
	n.driver.Store(driver)
	// The transport and the dialers follow the node table: a member added
	// is reached, a removed one forgotten. Only now: a peer's stream tells
	// the driver when it cannot reach it. The broker reads the placement
	// again too: a refusal names the leader's client address from the
	// table, and a leader may register its address after it took over (a
	// joining node that a balancer hands a group before it serves), which
	// no leadership change would tell.
	nodes.Watch(func() {
		n.syncPeers()
		n.tell(&actors.PlacementChanged{})
	})
	if _, err = telemetry.RegisterRaftGroups(tel.MeterProvider, n.raftGroups(cc.Partitions)); err != nil {
		return nil, err
	}
	n.placement = cluster.NewPlacement(n.replica, func() { n.tell(&actors.PlacementChanged{}) })
	n.syncPeers()
	if n.lis = opts.InternalListener; n.lis == nil {
		n.lis, err = net.Listen("tcp", cc.InternalListenAddr)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster.internal_listen_addr: %w", err)
	}
	serverOpts := append(transport.ServerOptions(),
		// The forwarded calls' spans, children of the forwarding node's
		// proxy span; not raft's. Their durations are measured where the
		// client called, not a second time here.
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider), otelgrpc.WithMeterProvider(noop.NewMeterProvider()),
			otelgrpc.WithPropagators(otel.GetTextMapPropagator()),
			otelgrpc.WithFilter(filters.ServicePrefix("fila.v1.")),
		)),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			// The node a forwarded call names must be the caller's
			// (an unparsable or absent id is no member's); a call not
			// marked forwarded is refused by the gateway.
			// A cut link drops forwarded calls as it drops raft messages.
			if v := metadata.ValueFromIncomingContext(ctx, gateway.ForwardedMetadata); len(v) > 0 {
				from, _ := strconv.ParseUint(v[0], 10, 64)
				if err := n.guard.check(ctx, from, telemetry.PeerCallForwarded); err != nil {
					return nil, err
				}
				if !faults.Allows(from, cc.NodeID) {
					return nil, status.Errorf(codes.Unavailable, "the link from node %d is cut (cluster fault rules)", from)
				}
			}
			return handler(ctx, req)
		}))
	if tlsFiles != nil {
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(tlsFiles.peerServerConfig())))
	} else if !config.IsLoopback(cc.InternalListenAddr) {
		log.Warn("the cluster's internal port is plaintext without [server.tls]: anyone who reaches it can take part in the raft groups and forward calls as any api key; set [server.tls] (the internal port is then mutual TLS) or keep it on a private network",
			slog.String("internal_listen_addr", cc.InternalListenAddr))
	}
	n.grpc = grpc.NewServer(serverOpts...)
	n.transport.Register(n.grpc)
	n.internal.Register(n.grpc)
	n.replica.RegisterSnapshots(n.grpc)
	clusterv1.RegisterMembershipServer(n.grpc, joinServer{n: n})
	go func() { _ = n.grpc.Serve(n.lis) }()
	if faults != nil {
		lis, err := net.Listen("tcp", cc.FaultControlAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster.fault_control_addr: %w", err)
		}
		n.control = &http.Server{Handler: faults.ControlHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = n.control.Serve(lis) }()
	}
	// After each round the peers are synced again: a removed node is
	// forgotten once no group holds it any more.
	// Twice per election timeout.
	n.membership = cluster.StartMembership(n.replica, cc.NodeID, cc.Partitions, cc.ElectionTimeout()/2, n.syncPeers, log)
	n.stopRefresh = n.placement.StartRefresh(opts.LeaderRefresh)
	if joining {
		if err := n.join(ctx, cc, dial, log); err != nil {
			return nil, err
		}
	}
	if err := n.awaitReady(ctx, cc, max(len(members), nodes.Count()), log); err != nil {
		return nil, err
	}
	n.startBalance(cc, log)
	log.Info("cluster node ready", slog.Uint64("node_id", cc.NodeID), slog.Int("members", len(members)),
		slog.Int("partitions", cc.Partitions), slog.String("internal_listen_addr", n.lis.Addr().String()))
	return n, nil
}

// peerDialCreds are the credentials this node dials the other members
// with: mutual TLS when [server.tls] is on, else plaintext.
func peerDialCreds(f *tlsFiles, addr string) grpc.DialOption {
	if f == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(f.peerClientConfig(addr)))
}

// awaitReady waits until the node may serve: with one member, until it
// leads every group (after an election timeout at the first start, at
// once after a restart); with more, until every group has a leader and
// this node has applied the meta group as far as it knew it committed,
// so that its broker starts with the queues the cluster has. It polls
// the driver's status, and gives up only with ctx or after many election
// timeouts (the other members may not be up yet). Every ten election
// timeouts of waiting it says what it waits for, so that a node that
// sits unready (its members down, or it was removed and nobody answers
// it) does not sit silent.
func (n *clusterNode) awaitReady(ctx context.Context, cc config.Cluster, members int, log *slog.Logger) error {
	bound := time.Now().Add(100 * cc.ElectionTimeout())
	say := time.Now().Add(10 * cc.ElectionTimeout())
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
		if g != cluster.MetaGroup && !st.Holds(cc.NodeID) && !slices.Contains(n.replica.Replicas(g), cc.NodeID) {
			ready = true // held by others only (a replication factor below the node count)
		}
		if ready {
			g++
			continue
		}
		if time.Now().After(bound) {
			return fmt.Errorf("cluster: group %d has no leader after %v", g, 100*cc.ElectionTimeout())
		}
		if now := time.Now(); now.After(say) {
			say = now.Add(10 * cc.ElectionTimeout())
			log.Warn("cluster node not serving yet: a group has no leader it heard from; the other members may be down, or this node was removed (then stop it and wipe its data directory)",
				slog.Uint64("group", g), slog.String("gives_up_in", time.Until(bound).Round(time.Second).String()))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cc.Tick()):
		}
	}
	return nil
}

// raftGroups reads the driver's groups for the raft gauges.
func (n *clusterNode) raftGroups(partitions int) func() []telemetry.GroupReading {
	return func() []telemetry.GroupReading {
		out := make([]telemetry.GroupReading, 0, partitions+1)
		for g := uint64(0); g <= uint64(partitions); g++ {
			st, _ := n.replica.Driver.Status(g)
			out = append(out, telemetry.GroupReading{Group: g, Commit: st.Commit, Applied: st.Applied,
				Leading: st.Leading, Meta: g == cluster.MetaGroup})
		}
		return out
	}
}

// Leader balance (issue 25).

// startBalance starts this node's part of leader balance, unless
// cluster.leader_balance is off.
func (n *clusterNode) startBalance(cc config.Cluster, log *slog.Logger) {
	n.election = cc.ElectionTimeout()
	for g := uint64(0); g <= uint64(cc.Partitions); g++ {
		n.groups = append(n.groups, g)
	}
	if !cc.LeaderBalance {
		return
	}
	nodes := n.replica.Nodes
	n.balancer = cluster.StartBalancer(cluster.BalanceOptions{
		Driver: n.replica.Driver, Groups: n.groups, Interval: cc.LeaderBalanceInterval(), Logger: log,
		LeadCount: func(ctx context.Context, node uint64) (int, bool) {
			return n.replica.LeadCount(ctx, node, cc.LeaderBalanceInterval())
		},
		Costs: n.groupCosts,
		Members: func() []uint64 {
			var ids []uint64
			for _, m := range nodes.Active() { // a removed node leads nothing
				ids = append(ids, m.ID)
			}
			return ids
		},
	})
}

// groupCosts is what taking each group over costs a new leader, as this
// node last read the queues it serves: the messages they hold (ready,
// delayed or leased), which the new leader loads before it serves. A
// group whose queues have not reported yet (just taken over) reads 0.
func (n *clusterNode) groupCosts() map[uint64]int64 {
	costs := map[uint64]int64{}
	sys := n.system.Load()
	if sys == nil {
		return costs
	}
	for queue, r := range sys.Board().Snapshot() {
		costs[n.replica.Families.Group(storage.FamilyOf(queue))] += r.Gauges[telemetry.Depth] + r.Gauges[telemetry.Delayed] + r.Gauges[telemetry.LeasesActive]
	}
	return costs
}

// handOff is a graceful stop's first step: no more balance moves, and
// every group this node leads handed to a caught-up voter, so that the
// groups have a leader while this node stops (instead of none for an
// election timeout). Bounded by three election timeouts.
func (n *clusterNode) handOff(ctx context.Context, log *slog.Logger) {
	if n.balancer != nil {
		n.balancer.Stop()
		n.balancer = nil
	}
	if n.replica == nil || len(n.groups) == 0 {
		return
	}
	start := time.Now()
	if moved := cluster.HandOff(ctx, n.replica.Driver, n.groups, 3*n.election, log); moved > 0 {
		log.Info("stopping: group leaderships handed off", slog.Int("groups", moved), slog.Duration("took", time.Since(start)))
	}
}

// close stops serving the other nodes, then the driver and the store.
func (n *clusterNode) close() error {
	if n.balancer != nil {
		n.balancer.Stop()
	}
	if n.stopRegister != nil {
		n.stopRegister()
		<-n.registered
	}
	if n.control != nil {
		_ = n.control.Close()
	}
	if n.membership != nil {
		n.membership.Stop()
	}
	if n.stopRefresh != nil {
		n.stopRefresh()
	}
	if n.grpc != nil {
		n.grpc.Stop()
	}
	if n.transport != nil {
		n.transport.Close()
	}
	if n.peers != nil {
		n.peers.close()
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

// internalAddrs are the members' internal addresses by node id: where
// this node forwards the calls for what another node leads.
func internalAddrs(members []config.Member) map[uint64]string {
	addrs := make(map[uint64]string, len(members))
	for _, m := range members {
		addrs[m.ID] = m.Addr
	}
	return addrs
}

// peerConns are the connections to the other members' internal ports
// for forwarded calls, one per member, dialed on first use.
type peerConns struct {
	self   uint64
	nodes  *cluster.Nodes                    // the members' internal addresses
	faults *transport.Faults                 // nil: none
	creds  func(addr string) grpc.DialOption // peerDialCreds: mutual TLS with [server.tls]
	mu     sync.Mutex
	conns  map[uint64]*grpc.ClientConn
	closed bool
}

var _ gateway.Peers = (*peerConns)(nil)

// The cluster metrics are told of snapshot transfers (ReplicaOptions.Observer).
var _ cluster.SnapshotObserver = (*telemetry.ClusterMetrics)(nil)

func newPeerConns(self uint64, nodes *cluster.Nodes, faults *transport.Faults, creds func(addr string) grpc.DialOption) *peerConns {
	return &peerConns{self: self, nodes: nodes, faults: faults, creds: creds, conns: map[uint64]*grpc.ClientConn{}}
}

// Conn implements gateway.Peers.
func (p *peerConns) Conn(node uint64) (grpc.ClientConnInterface, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return nil, errors.New("cluster: node stopping")
	case !p.faults.Allows(p.self, node):
		return nil, fmt.Errorf("cluster: the link to node %d is cut (cluster fault rules)", node)
	}
	info, ok := p.nodes.Get(node)
	switch {
	case !ok || info.InternalAddr == "":
		return nil, fmt.Errorf("cluster: node %d is not a member", node)
	case p.conns[node] != nil:
		return p.conns[node], nil
	}
	c, err := grpc.NewClient(info.InternalAddr, append(transport.DialOptions(),
		p.creds(info.InternalAddr),
		// A reply (a Peek page, a batch's results) may be as large as
		// what the client port sends.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(transport.MaxMessageBytes)))...)
	if err != nil {
		return nil, err
	}
	p.conns[node] = c
	return c, nil
}

func (p *peerConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for id, c := range p.conns {
		_ = c.Close()
		delete(p.conns, id)
	}
}
