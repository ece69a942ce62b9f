package server_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/filadtest"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/storage"
)

// partitionsOf reads each queue's recorded partition from the node's
// store.
func partitionsOf(t *testing.T, s storage.Store) map[string]uint32 {
	t.Helper()
	recs, err := s.Queues()
	require.NoError(t, err)
	out := map[string]uint32{}
	for _, rec := range recs {
		out[rec.GetName()] = rec.GetPartition()
	}
	return out
}

// On a cluster of 16 partitions, 16 queues created land on 16 partitions
// (each created on the least loaded one, and recorded there with its
// DLQ); an UpdateQueue keeps the partition, a restart too, and a queue
// deleted and created again goes back where it was.
func TestQueuesArePlacedOnTheLeastLoadedPartition(t *testing.T) {
	t.Parallel()
	const partitions = 16
	b := filadtest.Start(t, filadtest.Options{Config: func(c *config.Config) {
		oneNodeCluster(c)
		c.Cluster.Partitions = partitions
	}})
	ctx := ctxT(t)
	for i := range partitions {
		_, err := b.Admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: fmt.Sprint("q", i)})
		require.NoError(t, err)
	}
	placed := partitionsOf(t, b.Server.StoreForTest())
	used := map[uint32]string{}
	for i := range partitions {
		q := fmt.Sprint("q", i)
		p := placed[q]
		require.True(t, p >= 1 && p <= partitions, "%s recorded on partition %d", q, p)
		require.Empty(t, used[p], "%s and %s share partition %d", q, used[p], p)
		used[p] = q
		require.Equal(t, p, placed[q+".dlq"], "a queue's DLQ is on its partition")
	}

	_, err := b.Admin.UpdateQueue(ctx, &filav1.UpdateQueueRequest{Name: "q0",
		Config: &filav1.QueueConfig{VisibilityTimeoutMs: 12345}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"visibility_timeout_ms"}}})
	require.NoError(t, err)
	require.Equal(t, placed, partitionsOf(t, b.Server.StoreForTest()), "UpdateQueue keeps the partition")

	_, err = b.Admin.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: "q3"})
	require.NoError(t, err)
	_, err = b.Admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "q3"})
	require.NoError(t, err)
	require.Equal(t, placed, partitionsOf(t, b.Server.StoreForTest()), "a name created again goes back to its partition")

	b.Restart(t)
	require.Equal(t, placed, partitionsOf(t, b.Server.StoreForTest()), "a restart keeps the partitions")
	for i := range partitions {
		q := fmt.Sprint("q", i)
		_, err := b.Service.Enqueue(ctx, &filav1.EnqueueRequest{Queue: q, Payload: []byte("p")})
		require.NoError(t, err, "%s is served where its record says", q)
	}
}
