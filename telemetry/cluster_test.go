package telemetry

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func TestClusterMetricsRecordWhatTheyAreTold(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	groups := []GroupReading{
		{Group: 0, Commit: 9, Applied: 9, Leading: true, Meta: true},
		{Group: 1, Commit: 12, Applied: 7, Leading: true},
		{Group: 2, Commit: 5, Applied: 5},
		{Group: 3, Commit: 3, Applied: 4, Leading: true}, // applied past commit as last read: no lag, not negative
	}
	c, err := NewClusterMetrics(mp)
	require.NoError(t, err)
	_, err = RegisterRaftGroups(mp, func() []GroupReading { return groups })
	require.NoError(t, err)
	c.Persisted(3)
	c.Persisted(5)
	c.Committed(1, 2*time.Millisecond)
	c.LeaderChanged(1, 2)
	c.LeaderChanged(2, 2)
	c.Forwarded(context.Background(), "/fila.v1.FilaService/Enqueue")
	c.Snapshot(context.Background(), SnapshotSent, 4096, time.Second)
	c.PeerRefused(context.Background(), PeerCallRaft)

	ints := collect(t, reader)
	refused := ints[ClusterPeerRefused.Name]
	require.Len(t, refused, 1)
	call, _ := refused[0].Attributes.Value(AttrCall)
	require.Equal(t, PeerCallRaft, call.AsString())
	require.Equal(t, int64(1), refused[0].Value)
	require.Equal(t, int64(2), ints[RaftPartitionsLed.Name][0].Value, "partitions led, the meta group left out")
	lag := map[int64]int64{}
	for _, p := range ints[RaftApplyLag.Name] {
		g, ok := p.Attributes.Value(AttrGroup)
		require.True(t, ok)
		lag[g.AsInt64()] = p.Value
	}
	require.Equal(t, map[int64]int64{0: 0, 1: 5, 2: 0, 3: 0}, lag)
	require.Equal(t, int64(2), ints[RaftLeaderChanges.Name][0].Value)
	fwd := ints[ClusterForwarded.Name]
	require.Len(t, fwd, 1)
	m, _ := fwd[0].Attributes.Value(AttrRPCMethod)
	require.Equal(t, "/fila.v1.FilaService/Enqueue", m.AsString())

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	hists := map[string]metricdata.HistogramDataPoint[float64]{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
				require.Len(t, h.DataPoints, 1, m.Name)
				hists[m.Name] = h.DataPoints[0]
			}
		}
	}
	require.Equal(t, uint64(2), hists[RaftEntriesPerAppend.Name].Count)
	require.Equal(t, 8.0, hists[RaftEntriesPerAppend.Name].Sum)
	require.InDelta(t, 0.002, hists[RaftCommitDuration.Name].Sum, 1e-9)
	require.Equal(t, 4096.0, hists[RaftSnapshotBytes.Name].Sum)
	require.Equal(t, 1.0, hists[RaftSnapshotDuration.Name].Sum)
	snap := hists[RaftSnapshotBytes.Name]
	dir, _ := snap.Attributes.Value(AttrDirection)
	require.Equal(t, attribute.StringValue(SnapshotSent), dir)
}

func TestNilClusterMetricsRecordNothing(t *testing.T) {
	var c *ClusterMetrics
	c.Persisted(1)
	c.Committed(1, time.Second)
	c.LeaderChanged(1, 1)
	c.Forwarded(context.Background(), "/x")
	c.Snapshot(context.Background(), SnapshotReceived, 1, time.Second)
	c.SentSnapshot(1, time.Second)
	c.InstalledSnapshot(1, time.Second)
	c.PeerRefused(context.Background(), PeerCallForwarded)
}
