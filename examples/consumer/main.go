// Command consumer processes messages with client.Consume: each handler runs
// under a "process" span that joins the producer's trace (see
// examples/producer). It stops on Ctrl-C, or after -n messages.
//
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 go run ./examples/consumer
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"

	"github.com/fila-dev/filad/client"
	"github.com/fila-dev/filad/examples/internal/tracing"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

func main() {
	addr := flag.String("addr", envOr("FILA_ADDR", "127.0.0.1:5555"), "filad address")
	queue := flag.String("queue", "orders", "queue")
	n := flag.Int64("n", 3, "stop after this many messages (0: run until Ctrl-C)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	shutdown, err := tracing.Setup(ctx, "example-consumer")
	if err != nil {
		log.Fatal(err)
	}
	defer shutdown()

	c, err := client.Dial(*addr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var done atomic.Int64
	err = c.Consume(ctx, *queue, client.ConsumeOptions{MaxInFlight: 4}, func(ctx context.Context, m *filav1.Message) error {
		fmt.Printf("processing %s (%s, attempt %d) in trace %s\n", m.GetId(), m.GetMetadata().GetFairnessKey(),
			m.GetMetadata().GetAttemptCount(), trace.SpanContextFromContext(ctx).TraceID())
		if *n > 0 && done.Add(1) >= *n {
			stop()
		}
		return nil // ack
	})
	if err != nil {
		log.Fatal(err)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
