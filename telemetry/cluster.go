package telemetry

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// AttrNodeID is the resource attribute naming the cluster node (config
// cluster.node_id) on all of a cluster node's telemetry; absent on a
// single node.
const AttrNodeID = "fila.node.id"

// AttrGroup names the raft group (0 the meta group, 1.. the partitions)
// on fila.raft.apply.lag.
const AttrGroup = "group"

// AttrRaftGroup names the raft group on the fila.raft.commit span.
const AttrRaftGroup = "fila.raft.group"

// SpanRaftCommit is the span of one storage batch's way through raft: from
// its proposal to its apply on the leader. It is a child of the queue
// actor's fila.storage.commit span.
const SpanRaftCommit = "fila.raft.commit"

// Cluster instruments (issue 24); docs/telemetry.md describes each.
var (
	RaftCommitDuration = MetricSpec{Name: "fila.raft.commit.duration", Unit: "s",
		Description: "Time from proposing a storage batch to its apply on the leader (replication, quorum fsync and the local apply)."}
	RaftEntriesPerAppend = MetricSpec{Name: "fila.raft.entries_per_append", Unit: "{entry}",
		Description: "Raft entries made durable by one log write and fsync of the node's driver loop, over all its groups."}
	RaftApplyLag = MetricSpec{Name: "fila.raft.apply.lag", Unit: "{entry}",
		Description: "Entries a raft group committed that this node has not applied yet, by group."}
	RaftLeaderChanges = MetricSpec{Name: "fila.raft.leader_changes", Unit: "{change}",
		Description: "Times this node learnt of a new leader of one of its raft groups."}
	RaftPartitionsLed = MetricSpec{Name: "fila.raft.partitions_led", Unit: "{partition}",
		Description: "Partitions this node leads now (past the term's barrier), the meta group left out."}
	ClusterForwarded = MetricSpec{Name: "fila.cluster.forwarded", Unit: "{call}",
		Description: "Calls this node proxied to the leader of their queue, by rpc.method."}
	ClusterPeerRefused = MetricSpec{Name: "fila.cluster.peer.refused", Unit: "{call}",
		Description: "Internal calls refused because the caller's certificate may not speak for the node they claim, by call (raft, forwarded)."}
	RaftSnapshotBytes = MetricSpec{Name: "fila.raft.snapshot.bytes", Unit: "By",
		Description: "Size of each raft snapshot sent or received, by direction."}
	RaftSnapshotDuration = MetricSpec{Name: "fila.raft.snapshot.duration", Unit: "s",
		Description: "Time one raft snapshot took to send or to receive and install, by direction."}
)

// Attributes of the cluster instruments besides AttrGroup.
const (
	// AttrRPCMethod is the full gRPC method of a forwarded call.
	AttrRPCMethod = "rpc.method"
	// AttrDirection is sent or received, on the snapshot instruments.
	AttrDirection = "direction"
	// AttrCall is the kind of internal call refused, on
	// fila.cluster.peer.refused: one of the PeerCall values.
	AttrCall = "call"
)

// Internal calls a peer's identity is checked on (AttrCall).
const (
	PeerCallRaft      = "raft"
	PeerCallForwarded = "forwarded"
	PeerCallJoin      = "join"
	// PeerCallLeaders is Membership/Leaders: a member asking who leads
	// the partitions it holds no replica of.
	PeerCallLeaders = "leaders"
)

// GroupReading is one raft group as this node sees it at a collection.
type GroupReading struct {
	Group           uint64
	Commit, Applied uint64
	Leading, Meta   bool
}

// ClusterMetrics are a cluster node's raft and forwarding instruments. Its
// Persisted, Committed and LeaderChanged make it the driver's
// cluster.Observer; the other record methods are for the proxy and the
// snapshot transfer. A nil *ClusterMetrics records nothing.
type ClusterMetrics struct {
	commit, append, snapBytes, snapTime metric.Float64Histogram
	leaders, forwarded, peerRefused     metric.Int64Counter
}

// NewClusterMetrics creates the cluster's synchronous instruments on mp;
// RegisterRaftGroups adds the gauges read from the driver.
func NewClusterMetrics(mp metric.MeterProvider) (*ClusterMetrics, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	c := &ClusterMetrics{}
	var err error
	hist := func(spec MetricSpec, bounds []float64) metric.Float64Histogram {
		if err != nil {
			return nil
		}
		var h metric.Float64Histogram
		h, err = m.Float64Histogram(spec.Name, metric.WithUnit(spec.Unit), metric.WithDescription(spec.Description), metric.WithExplicitBucketBoundaries(bounds...))
		if err != nil {
			err = fmt.Errorf("telemetry: %s: %w", spec.Name, err)
		}
		return h
	}
	counter := func(spec MetricSpec) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var k metric.Int64Counter
		k, err = m.Int64Counter(spec.Name, metric.WithUnit(spec.Unit), metric.WithDescription(spec.Description))
		if err != nil {
			err = fmt.Errorf("telemetry: %s: %w", spec.Name, err)
		}
		return k
	}
	c.commit = hist(RaftCommitDuration, CommitBuckets)
	c.append = hist(RaftEntriesPerAppend, []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096})
	c.snapBytes = hist(RaftSnapshotBytes, []float64{1 << 10, 1 << 14, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28, 1 << 30, 1 << 32})
	c.snapTime = hist(RaftSnapshotDuration, []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300})
	c.leaders = counter(RaftLeaderChanges)
	c.forwarded = counter(ClusterForwarded)
	c.peerRefused = counter(ClusterPeerRefused)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// RegisterRaftGroups creates fila.raft.apply.lag and
// fila.raft.partitions_led on mp, read from groups at each collection.
func RegisterRaftGroups(mp metric.MeterProvider, groups func() []GroupReading) (metric.Registration, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	lag, err := m.Int64ObservableGauge(RaftApplyLag.Name, metric.WithUnit(RaftApplyLag.Unit), metric.WithDescription(RaftApplyLag.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", RaftApplyLag.Name, err)
	}
	led, err := m.Int64ObservableGauge(RaftPartitionsLed.Name, metric.WithUnit(RaftPartitionsLed.Unit), metric.WithDescription(RaftPartitionsLed.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", RaftPartitionsLed.Name, err)
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		n := int64(0)
		for _, g := range groups() {
			if g.Leading && !g.Meta {
				n++
			}
			l := int64(0)
			if g.Commit > g.Applied {
				l = int64(g.Commit - g.Applied)
			}
			o.ObserveInt64(lag, l, metric.WithAttributes(attribute.Int64(AttrGroup, int64(g.Group))))
		}
		o.ObserveInt64(led, n)
		return nil
	}, lag, led)
	if err != nil {
		return nil, fmt.Errorf("telemetry: register raft groups callback: %w", err)
	}
	return reg, nil
}

// Persisted records fila.raft.entries_per_append (cluster.Observer).
func (c *ClusterMetrics) Persisted(entries int) {
	if c != nil {
		c.append.Record(context.Background(), float64(entries))
	}
}

// Committed records fila.raft.commit.duration (cluster.Observer).
func (c *ClusterMetrics) Committed(_ uint64, took time.Duration) {
	if c != nil {
		c.commit.Record(context.Background(), took.Seconds())
	}
}

// LeaderChanged counts fila.raft.leader_changes (cluster.Observer).
func (c *ClusterMetrics) LeaderChanged(_, _ uint64) {
	if c != nil {
		c.leaders.Add(context.Background(), 1)
	}
}

// Forwarded counts one call proxied to its queue's leader: fullMethod is
// the gRPC method (/fila.v1.FilaService/Enqueue). The proxy calls it once
// per forwarded call (a batch split over leaders counts once per leader
// called), ctx being the call's, whatever the outcome.
func (c *ClusterMetrics) Forwarded(ctx context.Context, fullMethod string) {
	if c != nil {
		c.forwarded.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrRPCMethod, fullMethod)))
	}
}

// PeerRefused counts one internal call refused because the caller's
// certificate may not speak for the node it claimed; call is one of the
// PeerCall values.
func (c *ClusterMetrics) PeerRefused(ctx context.Context, call string) {
	if c != nil {
		c.peerRefused.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrCall, call)))
	}
}

// Snapshot directions.
const (
	SnapshotSent     = "sent"
	SnapshotReceived = "received"
)

// Snapshot records one snapshot transfer of size bytes that took took, in
// direction SnapshotSent or SnapshotReceived: for the snapshot work.
func (c *ClusterMetrics) Snapshot(ctx context.Context, direction string, bytes int64, took time.Duration) {
	if c != nil {
		a := metric.WithAttributes(attribute.String(AttrDirection, direction))
		c.snapBytes.Record(ctx, float64(bytes), a)
		c.snapTime.Record(ctx, took.Seconds(), a)
	}
}

// SentSnapshot records a snapshot stream this node sent whole
// (cluster.SnapshotObserver): fila.raft.snapshot.* with direction sent.
func (c *ClusterMetrics) SentSnapshot(bytes uint64, took time.Duration) {
	c.Snapshot(context.Background(), SnapshotSent, int64(bytes), took)
}

// InstalledSnapshot records a snapshot this node received and installed
// (cluster.SnapshotObserver): direction received.
func (c *ClusterMetrics) InstalledSnapshot(bytes uint64, took time.Duration) {
	c.Snapshot(context.Background(), SnapshotReceived, int64(bytes), took)
}
