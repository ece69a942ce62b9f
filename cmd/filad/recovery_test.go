package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestRecoveryIsHonest: after a kill -9, filad serves only once every queue
// is loaded, so its first answers show the whole backlog, and it logs what
// it recovered (issue 22, item 2: a queue of 99,989 messages read 0 for
// three seconds after "filad serving").
func TestRecoveryIsHonest(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	p := startFilad(t, dataDir)
	c := connect(t, p.addr)
	const queues, perQueue, batch = 4, 10_000, 500
	for q := range queues {
		name := "backlog-" + string(rune('a'+q))
		_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: name})
		require.NoError(t, err)
		for range perQueue / batch {
			req := &filav1.EnqueueBatchRequest{}
			for range batch {
				req.Messages = append(req.Messages, &filav1.EnqueueRequest{Queue: name, Payload: make([]byte, 256)})
			}
			_, err := c.svc.EnqueueBatch(ctx, req)
			require.NoError(t, err)
		}
	}
	p.kill9(t)

	// A deadline of its own for the second half (the fill took the first's).
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p = startFilad(t, dataDir)
	c = connect(t, p.addr)
	// The first call after "filad serving": no wait, no retry.
	list, err := c.admin.ListQueues(ctx, &filav1.ListQueuesRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetQueues(), 2*queues, "each with its DLQ")
	for _, q := range list.GetQueues() {
		if strings.HasSuffix(q.GetName(), ".dlq") {
			continue
		}
		require.EqualValues(t, perQueue, q.GetDepth(), "%s reads as its whole backlog at once", q.GetName())
	}
	require.True(t, p.logged(`"msg":"recovery finished","queues":8,"messages":40000`), "the recovery's totals are logged")
}
