package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServerModule is the yardstick filabench installs with go install
// (into GOPATH/bin) when that binary is missing or another version: the
// version the issues measured, and new enough for `sync_interval: always`
// (Debian's 2.9 does not know it).
const (
	natsServerModule  = "github.com/nats-io/nats-server/v2@v2.15.2"
	natsServerVersion = "v2.15.2"
)

// natsBinary returns GOPATH/bin/nats-server at the pinned version,
// installing it first when needed, and reports its version.
func natsBinary() (path, version string, err error) {
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOPATH: %w", err)
	}
	path = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "nats-server")
	out, err := exec.Command(path, "--version").Output()
	if err != nil || !strings.Contains(string(out), natsServerVersion) {
		if out, err := exec.Command("go", "install", natsServerModule).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("install %s: %v\n%s", natsServerModule, err, out)
		}
		if out, err = exec.Command(path, "--version").Output(); err != nil {
			return "", "", fmt.Errorf("%s --version: %w", path, err)
		}
	}
	return path, strings.TrimSpace(string(out)), nil
}

// natsTarget is a nats-server -js on a temp dir with one work-queue stream
// (file storage) and a pull consumer with explicit ack. With syncAlways it
// runs with `sync_interval: always` (an fsync per message: the durable
// yardstick); otherwise on JetStream's default (sync every 2 minutes).
type natsTarget struct {
	cmd    *exec.Cmd
	dir    string
	nc     *nats.Conn
	js     jetstream.JetStream
	seq    atomic.Int64
	exited chan struct{}
}

func startNATS(ctx context.Context, bin string, syncAlways bool) (*natsTarget, error) {
	dir, err := os.MkdirTemp("", "filabench-nats")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("listen: \"127.0.0.1:%d\"\njetstream {\n  store_dir: %q\n", port, dir)
	if syncAlways {
		conf += "  sync_interval: always\n"
	}
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf+"}\n"), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", confPath)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &natsTarget{cmd: cmd, dir: dir, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(t.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		t.nc, err = nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.close()
			return nil, fmt.Errorf("nats-server did not start: %w", err)
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started, with a deadline
	}
	if t.js, err = jetstream.New(t.nc); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (t *natsTarget) close() {
	if t.nc != nil {
		t.nc.Close()
	}
	_ = t.cmd.Process.Kill()
	<-t.exited
	_ = os.RemoveAll(t.dir)
}

// newStream creates a work-queue stream with file storage and a durable
// pull consumer with explicit ack, and returns its subject and consumer.
func (t *natsTarget) newStream(ctx context.Context) (string, jetstream.Consumer, error) {
	name := fmt.Sprintf("BENCH%d", t.seq.Add(1))
	subject := strings.ToLower(name)
	s, err := t.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{subject}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return "", nil, err
	}
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "bench", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	return subject, c, err
}

// produce publishes n messages from p producers, each waiting for its
// PubAck before the next (synchronous publishes, as filad's Enqueue).
func (t *natsTarget) produce(ctx context.Context, subject string, p, n int, payload []byte) error {
	return inParallel(p, n, func(int) error {
		_, err := t.js.Publish(ctx, subject, payload)
		return err
	})
}

func (t *natsTarget) enqueueThroughput(ctx context.Context, producers, n int, payload []byte) (result, error) {
	subject, _, err := t.newStream(ctx)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := t.produce(ctx, subject, producers, n, payload); err != nil {
		return result{}, err
	}
	return rate(fmt.Sprintf("enqueue %dP %dB", producers, len(payload)), n, time.Since(start)), nil
}

// lifecycleThroughput: producers publish synchronously while c consumers
// pull and double-ack (the ack waits for the server's confirmation, as
// filad's Ack waits for durability) until n are acked.
func (t *natsTarget) lifecycleThroughput(ctx context.Context, producers, consumers, n int, payload []byte) (result, error) {
	return t.lifecycle(ctx, fmt.Sprintf("lifecycle %dP/%dC %dB", producers, consumers, len(payload)), consumers, n,
		func(subject string) error { return t.produce(ctx, subject, producers, n, payload) },
		func(m jetstream.Msg) error { return m.DoubleAck(ctx) })
}

// lifecycle runs produce while c consumers pull and ack each message until
// n are acked.
func (t *natsTarget) lifecycle(ctx context.Context, name string, consumers, n int, produce func(subject string) error, ack func(jetstream.Msg) error) (result, error) {
	subject, cons, err := t.newStream(ctx)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	var acked atomic.Int64
	done := make(chan struct{})
	errs := make(chan error, consumers+1)
	var ccs []jetstream.ConsumeContext
	for range consumers {
		cc, err := cons.Consume(func(m jetstream.Msg) {
			if err := ack(m); err != nil {
				errs <- err
				return
			}
			if acked.Add(1) == int64(n) {
				close(done)
			}
		})
		if err != nil {
			return result{}, err
		}
		ccs = append(ccs, cc)
	}
	defer func() {
		for _, cc := range ccs {
			cc.Stop()
		}
	}()
	if err := produce(subject); err != nil {
		return result{}, err
	}
	select {
	case <-done:
	case err := <-errs:
		return result{}, err
	case <-ctx.Done():
		return result{}, ctx.Err()
	case <-time.After(5 * time.Minute):
		return result{}, errors.New("nats lifecycle: timed out waiting for acks")
	}
	return rate(name, n, time.Since(start)), nil
}

// produceAsync publishes n messages with PublishAsync (pipelined: the
// client keeps up to its default of 4,000 unacknowledged) and waits until
// every PubAck has come back, failing on the first that failed.
func (t *natsTarget) produceAsync(ctx context.Context, subject string, n int, payload []byte) error {
	futures := make([]jetstream.PubAckFuture, 0, n)
	for range n {
		// With 4,000 pending, wait for room (an fsync per message makes
		// acks slow) rather than fail after the default 200 ms.
		f, err := t.js.PublishAsync(subject, payload, jetstream.WithStallWait(time.Minute))
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	select {
	case <-t.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		}
	}
	return nil
}

func (t *natsTarget) enqueueAsyncThroughput(ctx context.Context, n int, payload []byte) (result, error) {
	subject, _, err := t.newStream(ctx)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := t.produceAsync(ctx, subject, n, payload); err != nil {
		return result{}, err
	}
	return rate(fmt.Sprintf("enqueue batched %dB", len(payload)), n, time.Since(start)), nil
}

// lifecycleAsyncThroughput: async publishes while c consumers pull and ack
// (explicit, not waiting for the server's confirmation), until n are acked.
func (t *natsTarget) lifecycleAsyncThroughput(ctx context.Context, consumers, n int, payload []byte) (result, error) {
	return t.lifecycle(ctx, fmt.Sprintf("lifecycle batched %dC %dB", consumers, len(payload)), consumers, n,
		func(subject string) error { return t.produceAsync(ctx, subject, n, payload) },
		func(m jetstream.Msg) error { return m.Ack() })
}
