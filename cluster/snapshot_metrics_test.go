package cluster

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fila-dev/filad/telemetry"
)

// A replica whose Observer is the cluster's metrics records each snapshot
// it sends and installs in fila.raft.snapshot.bytes and .duration, by
// direction, as its counters do.
func TestSnapshotTransfersAreRecordedInTelemetry(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	metrics, err := telemetry.NewClusterMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	c, down, _ := snapshotRun(t, nil, func(o *ReplicaOptions) { o.Observer = metrics })

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	type reading struct {
		count uint64
		sum   float64
	}
	got := map[string]map[string]reading{} // instrument, direction
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok || (m.Name != telemetry.RaftSnapshotBytes.Name && m.Name != telemetry.RaftSnapshotDuration.Name) {
				continue
			}
			got[m.Name] = map[string]reading{}
			for _, p := range h.DataPoints {
				dir, _ := p.Attributes.Value(telemetry.AttrDirection)
				got[m.Name][dir.AsString()] = reading{p.Count, p.Sum}
			}
		}
	}
	st := c.node(down).SnapshotStats()
	recv := got[telemetry.RaftSnapshotBytes.Name][telemetry.SnapshotReceived]
	// The counters, read after the collection and never going back, bound
	// what was recorded: another transfer may be under way (or have
	// broken, which the counters count and telemetry does not).
	if recv.count == 0 || recv.count > st.Installs || recv.sum == 0 || recv.sum > float64(st.ReceivedBytes) {
		t.Errorf("received: %+v recorded, the follower counted %d installs of %d bytes", recv, st.Installs, st.ReceivedBytes)
	}
	var sends, sentBytes uint64
	for _, id := range c.peers {
		s := c.node(id).SnapshotStats()
		sends, sentBytes = sends+s.Sends, sentBytes+s.SentBytes
	}
	sent := got[telemetry.RaftSnapshotBytes.Name][telemetry.SnapshotSent]
	if sent.count == 0 || sent.count > sends || sent.sum == 0 || sent.sum > float64(sentBytes) {
		t.Errorf("sent: %+v recorded, the nodes counted %d sends of %d bytes", sent, sends, sentBytes)
	}
	for _, dir := range []string{telemetry.SnapshotSent, telemetry.SnapshotReceived} {
		if d := got[telemetry.RaftSnapshotDuration.Name][dir]; d.count == 0 || d.sum <= 0 {
			t.Errorf("%s duration: %+v", dir, d)
		}
	}
}
