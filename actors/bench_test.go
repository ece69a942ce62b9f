package actors

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/storage"
)

// BenchmarkLifecycle measures the queue actor's per-message cost of the
// batched lifecycle (issue 26, item 4): one op is an EnqueueBatch of
// lifecycleBatch messages, their deliveries and one SettleBatch acking
// them, on an in-memory store, so that what it counts (allocs/op above
// all) is the actors' and the batch's, not a disk's.
func BenchmarkLifecycle(b *testing.B) {
	const lifecycleBatch = 64
	saved := checkEachStep
	checkEachStep = nil // the invariant checks would dominate what is measured
	defer func() { checkEachStep = saved }()
	sys, err := Start(Options{
		Store:          storage.NewMemory(),
		Quantum:        1,
		RequestTimeout: time.Minute,
		DefaultQueue:   QueueConfig{VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"},
		ConfigStore:    testConfigLimits,
		// config.Defaults' cache: the backlog fits it, as item 4's
		// "small backlog" case says.
		MessageCacheBytes: 64 << 20,
		Lua:               scripting.Limits{Timeout: 5 * time.Second, MemoryBytes: 1 << 20, BreakerThreshold: 3, BreakerCooldown: time.Minute},
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sys.Stop()
	ctx := context.Background()
	ask := func(msg any) any {
		ref := sys.Directory().Lookup("bench")
		var pid = sys.Broker()
		if ref != nil {
			pid = ref.PID
		}
		res, err := sys.Ask(ctx, pid, nil, msg)
		if err != nil {
			b.Fatal(err)
		}
		return res
	}
	if err := ask(&CreateQueue{Config: QueueConfig{Name: "bench", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"}}).(*AdminReply).Err; err != nil {
		b.Fatal(err)
	}
	c := NewConsumer(lifecycleBatch, lifecycleBatch)
	ask(&Subscribe{Consumer: c})
	payload := make([]byte, 1024)
	items := make([]*Enqueue, lifecycleBatch)
	settle := make([]SettleItem, lifecycleBatch)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range items {
			items[j] = &Enqueue{Headers: map[string]string{"key": fmt.Sprint("k", j%4)}, Payload: payload}
		}
		for _, r := range ask(&EnqueueBatch{Items: items}).(*EnqueueBatchReply).Results {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		for j := range settle {
			var d *Delivery
			select {
			case d = <-c.Deliveries:
			case <-time.After(time.Minute):
				b.Fatal("no delivery")
			}
			if len(c.Deliveries) == cap(c.Deliveries)-1 {
				sys.Send(sys.Directory().Lookup("bench").PID, &ConsumerReady{})
			}
			settle[j] = SettleItem{ID: d.ID, LeaseID: d.LeaseID}
		}
		for _, err := range ask(&SettleBatch{Items: settle}).(*SettleBatchReply).Errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*lifecycleBatch), "ns/msg")
}
