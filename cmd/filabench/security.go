package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/testpki"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// panicT lets filabench use testpki, which reports failures to a test.
type panicT struct{}

func (panicT) Helper()           {}
func (panicT) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// securityOverhead alternates batched lifecycle runs with TLS and API keys
// off and on (connections reused, as the client does), several rounds,
// and reports the median ratio on/off.
func (e *bench) securityOverhead(ctx context.Context, rounds int) ([]result, error) {
	dir, err := os.MkdirTemp("", "filabench-tls")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	root := testpki.NewCA(panicT{}, "filabench CA")
	cert, key := root.Issue(panicT{}, "filad", 2, true, time.Now().Add(24*time.Hour))
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		_ = os.WriteFile(p, b, 0o600)
		return p
	}
	certFile, keyFile := write("s.pem", cert), write("s.key", key)
	const secret = "filabench-bootstrap-key-0123456789abcdef"
	tlsCfg := root.ClientConfig(panicT{}, nil, nil)
	secure := func(c *config.Config) (func(), error) {
		c.Storage.SyncWrites = false
		c.Server.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile, MinVersion: "1.2"}
		c.Auth = config.Auth{Mode: "on", BootstrapKey: secret}
		return func() {}, nil
	}
	var ratios []float64
	var out []result
	for range rounds {
		off, err := e.onFilad(ctx, withSyncWrites(false), func(ctx context.Context, t *filadTarget) ([]result, error) {
			r, err := t.lifecycleBatchedThroughput(ctx, 1024, 4, e.f.messages, make([]byte, 1024))
			return []result{r}, err
		})
		if err != nil {
			return nil, err
		}
		on, err := e.onFiladWith(ctx, secure, tlsCfg, secret, func(ctx context.Context, t *filadTarget) ([]result, error) {
			r, err := t.lifecycleBatchedThroughput(ctx, 1024, 4, e.f.messages, make([]byte, 1024))
			return []result{r}, err
		})
		if err != nil {
			return nil, err
		}
		off[0].Target, on[0].Target = targetNoSync+", plaintext, no keys", targetNoSync+", TLS and API keys"
		out = append(out, off[0], on[0])
		ratios = append(ratios, on[0].Value/off[0].Value)
	}
	slices.Sort(ratios)
	out = append(out, result{Workload: "TLS and API keys on / off", Target: targetNoSync, Value: ratios[len(ratios)/2], Unit: "ratio",
		Note: fmt.Sprintf("median of %d alternating rounds, lifecycle batched 4C 1KiB; target ≥ 0.9", rounds)})

	// The same with a client trying bad keys as fast as it can beside.
	var refused atomic.Int64
	brute, err := e.onFiladWith(ctx, secure, tlsCfg, secret, func(ctx context.Context, t *filadTarget) ([]result, error) {
		guesser, err := newSecureFiladTarget(t.conn.Target(), tlsCfg, "fila_guess")
		if err != nil {
			return nil, err
		}
		defer guesser.close()
		gctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			for gctx.Err() == nil {
				if _, err := guesser.svc.Enqueue(gctx, &filav1.EnqueueRequest{Queue: "x"}); err != nil {
					refused.Add(1)
				}
			}
		}()
		r, err := t.lifecycleBatchedThroughput(ctx, 1024, 4, e.f.messages, make([]byte, 1024))
		return []result{r}, err
	})
	if err != nil {
		return nil, err
	}
	brute[0].Target = targetNoSync + ", TLS and API keys, bad keys tried beside"
	brute[0].Note = fmt.Sprintf("%d bad-key calls refused meanwhile", refused.Load())
	on := out[len(out)-2].Value // the last round's TLS-and-keys run
	return append(out, brute[0], result{Workload: "with a brute-force client beside / without", Target: targetNoSync,
		Value: brute[0].Value / on, Unit: "ratio", Note: "one round each"}), nil
}
