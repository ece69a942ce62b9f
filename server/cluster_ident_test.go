package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
	"github.com/fila-dev/filad/internal/testpki"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
)

// With [server.tls], a member's certificate speaks only for the member
// whose host it names: node 2's certificate (127.0.0.2) is refused at
// node 1's internal port when its raft stream or its forwarded call
// claims to be node 3 (127.0.0.3), and taken as node 2's. The refusals
// name the claim and the certificate's host, and are counted.
func TestClusterInternalPortBindsTheClaimedNodeToItsCertificate(t *testing.T) {
	dir := t.TempDir()
	root := testpki.NewCA(t, "filad members CA")
	caFile := writeFile(t, dir, "ca.pem", root.PEM)
	reader := sdkmetric.NewManualReader()
	tr := startTrio(t, trioOptions{spread: true,
		cfg: func(i int, c *config.Config) {
			cert, key := root.IssueNodeAt(t, fmt.Sprint("node-", i+1), int64(100+i), trioHost(i, true))
			c.Server.TLS = config.TLS{CertFile: writeFile(t, dir, fmt.Sprint(i, ".pem"), cert), KeyFile: writeFile(t, dir, fmt.Sprint(i, ".key"), key), MinVersion: "1.2"}
			c.Cluster.TLSCAFile = caFile
		},
		opts: func(i int) server.Options {
			if i != 0 {
				return server.Options{}
			}
			return server.Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), TracerProvider: sdktrace.NewTracerProvider()}
		}})

	// A member's certificate, for node 2's host, dialing node 1.
	cert, key := root.IssueNodeAt(t, "node-2-again", 200, trioHost(1, true))
	conn, err := grpc.NewClient(tr.internal[0], grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, cert, key))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ctx := clusterCtx(t)

	stream := func(claimed uint64) error {
		s, err := clusterv1.NewRaftClient(conn).Stream(ctx)
		require.NoError(t, err)
		// No raft message: the claim alone is judged, and nothing reaches
		// node 1's groups either way.
		if err := s.Send(&clusterv1.RaftBatch{From: claimed, To: 1}); err == nil {
			_ = s.CloseSend()
		}
		_, err = s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	forward := func(claimed uint64) error {
		ctx := metadata.AppendToOutgoingContext(ctx, gateway.ForwardedMetadata, fmt.Sprint(claimed))
		_, err := filav1.NewFilaAdminClient(conn).ListQueues(ctx, &filav1.ListQueuesRequest{})
		return err
	}

	join := func(claimed uint64, addr string) error {
		_, err := clusterv1.NewMembershipClient(conn).Join(ctx, &clusterv1.JoinRequest{NodeId: claimed, InternalAddr: addr})
		return err
	}

	require.NoError(t, join(2, tr.internal[1]), "the control: node 2's certificate joins as node 2, at its address")
	err = join(5, "127.0.0.3:7999")
	require.Equal(t, codes.PermissionDenied, status.Code(err), "a join at node 3's host with node 2's certificate: %v", err)
	require.Contains(t, status.Convert(err).Message(), "127.0.0.3")
	require.NoError(t, stream(2), "the control: node 2's certificate streams as node 2")
	require.NoError(t, forward(2), "the control: node 2's certificate forwards as node 2")
	for what, err := range map[string]error{"a raft stream": stream(3), "a forwarded call": forward(3)} {
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%s claiming node 3 with node 2's certificate: %v", what, err)
		require.Contains(t, status.Convert(err).Message(), "node 3", what)
		require.Contains(t, status.Convert(err).Message(), "127.0.0.2", what)
		require.Contains(t, status.Convert(err).Message(), "127.0.0.3", what)
	}
	require.Equal(t, codes.PermissionDenied, status.Code(forward(9)), "a forwarded call naming no member")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	refused := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "fila.cluster.peer.refused" {
				for _, p := range sum.DataPoints {
					call, _ := p.Attributes.Value(attribute.Key("call"))
					refused[call.AsString()] += p.Value
				}
			}
		}
	}
	require.Equal(t, map[string]int64{"raft": 1, "forwarded": 2, "join": 1}, refused)
}
