package storage

import (
	"fmt"
	"testing"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// BenchmarkWrite measures one synchronous writer: the latency floor of a
// durable Enqueue (one fsync per message, as nothing else shares it).
func BenchmarkWrite(b *testing.B) {
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir(), SyncWrites: sync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			rec := &storagev1.MessageRecord{Payload: make([]byte, 1024)}
			b.ResetTimer()
			for i := range b.N {
				var batch Batch
				batch.PutMessage("q", fmt.Sprint(i), rec)
				if err := s.Write(&batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBatchOps measures building a batch: what owner tracking adds
// to each op (a settle's delete of a message and its lease, here).
func BenchmarkBatchOps(b *testing.B) {
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("01936f0e-7b4c-7d2a-9c3e-%012d", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		var batch Batch
		for _, id := range ids {
			batch.DeleteMessage("orders", id)
			batch.DeleteLease("orders", id)
		}
	}
}
