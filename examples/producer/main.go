// Command producer enqueues a few messages under a "checkout" span, so that
// with examples/consumer and a filad exporting to the same collector, one
// trace runs from here through the broker to the consumer's processing.
//
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 go run ./examples/producer
//
// Without OTEL_EXPORTER_OTLP_ENDPOINT it still runs; its spans go nowhere.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"

	"go.opentelemetry.io/otel"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/client"
	"github.com/fila-dev/filad/examples/internal/tracing"
)

func main() {
	addr := flag.String("addr", envOr("FILA_ADDR", "127.0.0.1:5555"), "filad address")
	queue := flag.String("queue", "orders", "queue (created if missing)")
	n := flag.Int("n", 3, "messages to enqueue")
	flag.Parse()

	ctx := context.Background()
	shutdown, err := tracing.Setup(ctx, "example-producer")
	if err != nil {
		log.Fatal(err)
	}
	defer shutdown()

	c, err := client.Dial(*addr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.CreateQueue(ctx, *queue, client.QueueConfig{}); err != nil && status.Code(err) != codes.AlreadyExists {
		log.Fatal(err)
	}

	ctx, span := otel.Tracer("example-producer").Start(ctx, "checkout")
	defer span.End()
	for i := range *n {
		tenant := fmt.Sprintf("tenant-%d", i%2)
		id, err := c.Enqueue(ctx, *queue, map[string]string{"fila-fairness-key": tenant}, fmt.Appendf(nil, "order %d", i))
		if err != nil {
			log.Fatal(errors.Join(errors.New("enqueue"), err))
		}
		fmt.Printf("enqueued %s (%s) in trace %s\n", id, tenant, span.SpanContext().TraceID())
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
