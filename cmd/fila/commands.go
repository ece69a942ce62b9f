package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// DefaultAddr is where fila looks for filad without --addr or FILA_ADDR.
const DefaultAddr = "127.0.0.1:5555"

type global struct {
	addr    string
	version bool
	// tlsCA, tlsCert and tlsKey are PEM files: the CA that signed filad's
	// certificate (turns TLS on), and a client certificate for mTLS.
	tlsCA, tlsCert, tlsKey string
	// apiKey is sent as "authorization: Bearer"; --api-key or FILA_API_KEY.
	apiKey string
}

func parseGlobal(args []string, getenv func(string) string) (global, []string, error) {
	g := global{}
	fs := globalFlags(&g, getenv)
	if err := fs.Parse(args); err != nil {
		return g, nil, err
	}
	return g, fs.Args(), nil
}

// globalFlags declares fila's flags before the command, into g.
func globalFlags(g *global, getenv func(string) string) *flag.FlagSet {
	fs := newFlagSet("fila")
	fs.BoolVar(&g.version, "version", false, "print the version and exit")
	def := getenv("FILA_ADDR")
	if def == "" {
		def = DefaultAddr
	}
	fs.StringVar(&g.addr, "addr", def, "filad address")
	fs.StringVar(&g.apiKey, "api-key", getenv("FILA_API_KEY"), "API key (default $FILA_API_KEY)")
	fs.StringVar(&g.tlsCA, "tls-ca", "", "PEM file of the CA that signed filad's certificate: connect with TLS")
	fs.StringVar(&g.tlsCert, "tls-cert", "", "PEM client certificate, for filad with mTLS (with --tls-key)")
	fs.StringVar(&g.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	return fs
}

type command func(ctx context.Context, g global, args []string, e env) int

var commands = map[string]command{
	"queue":    queueCmd,
	"config":   configCmd,
	"throttle": throttleCmd,
	"key":      keyCmd,
	"enqueue":  enqueueCmd,
	"consume":  consumeCmd,
	"admin":    adminCmd,
	"cluster":  clusterCmd,
	// completion is added by init: it reads this table.
}

func init() { commands["completion"] = completionCmd }

// exportFlushTimeout bounds the flush of fila's own spans at exit.
const exportFlushTimeout = time.Second

// connect dials filad, exporting fila's own spans when
// OTEL_EXPORTER_OTLP_ENDPOINT is set; call the returned func when done.
func connect(ctx context.Context, g global, e env) (*client.Client, func(), error) {
	opts := client.Options{Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	tlsConfig, err := g.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	opts.TLS, opts.APIKey = tlsConfig, g.apiKey
	shutdown := func() {}
	if e.getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		// The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, TLS, headers).
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("tracing: %w", err)
		}
		res, _ := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName("fila-cli")))
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		opts.TracerProvider = tp
		otel.SetTracerProvider(tp)
		// The CLI's spans are a convenience: with no collector listening,
		// one warning and at most a second at exit, not the exporter's 10 s
		// timeout and its raw log line.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
		shutdown = func() {
			flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), exportFlushTimeout)
			defer cancel()
			if err := tp.Shutdown(flushCtx); err != nil {
				fmt.Fprintf(e.stderr, "fila: warning: spans not exported to %s: %v\n", e.getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), err)
			}
		}
	}
	c, err := client.Dial(g.addr, opts)
	if err != nil {
		shutdown()
		return nil, nil, err
	}
	return c, func() { _ = c.Close(); shutdown() }, nil
}

// fail prints err as one line and returns its exit code.
func fail(e env, err error) int {
	fmt.Fprintln(e.stderr, "fila:", describe(err))
	return exitError
}

// describe turns a gRPC status into a one-line message for a person.
func describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		msg := "filad is not reachable or is shutting down: " + st.Message()
		switch {
		case strings.Contains(st.Message(), "server preface"):
			// A plaintext client on a TLS port reads the TLS server's
			// alert, not HTTP/2's preface.
			msg += " (if filad serves TLS there, connect with --tls-ca FILE)"
		case strings.Contains(st.Message(), "does not look like a TLS handshake"):
			msg += " (filad there does not serve TLS: leave out --tls-ca)"
		}
		return msg + " (UNAVAILABLE)"
	case codes.DeadlineExceeded:
		return "filad did not answer in time (DEADLINE_EXCEEDED)"
	default:
		return fmt.Sprintf("%s (%s)", st.Message(), strings.ToUpper(snake(st.Code().String())))
	}
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func usageErr(e env, format string, a ...any) int {
	fmt.Fprintf(e.stderr, "fila: "+format+"\n", a...)
	return exitUsage
}

// parseCommand parses a command's flags; synopsis is its usage line. With
// -h or --help it prints the usage to stdout and the command exits 0; a bad
// flag exits 2 with the usage on stderr. ok is false when the command ends.
func parseCommand(fs *flag.FlagSet, args []string, e env, synopsis string) (pos []string, exit int, ok bool) {
	pos, err := parseInterleaved(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(e.stdout, fs, synopsis)
		return nil, exitOK, false
	case err != nil:
		fmt.Fprintf(e.stderr, "fila: %v\n", err)
		printUsage(e.stderr, fs, synopsis)
		return nil, exitUsage, false
	}
	return pos, exitOK, true
}

func printUsage(w io.Writer, fs *flag.FlagSet, synopsis string) {
	fmt.Fprintf(w, "usage: fila %s\n", synopsis)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parseInterleaved parses fs's flags wherever they appear among args and
// returns the positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// headerFlags collects repeated -H key=value.
type headerFlags map[string]string

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("header %q: want key=value", kv)
	}
	h[k] = v
	return nil
}

// enqueueOpts are enqueue's flags.
type enqueueOpts struct {
	headers headerFlags
	lines   bool
	json    bool
}

const enqueueSynopsis = "enqueue QUEUE [PAYLOAD] [-H key=value]... [--lines]   (payload from stdin when absent)"

func enqueueFlags(fs *flag.FlagSet) *enqueueOpts {
	o := &enqueueOpts{headers: headerFlags{}}
	fs.Var(o.headers, "H", "header key=value (repeatable)")
	fs.BoolVar(&o.lines, "lines", false, "one message per stdin line, stored in input order; prints each id in input order")
	fs.BoolVar(&o.json, "json", false, `print {"message_id": ID} (with --lines, {"line": N, "message_id": ID} per line)`)
	return o
}

func enqueueCmd(ctx context.Context, g global, args []string, e env) int {
	fs := newFlagSet("enqueue")
	o := enqueueFlags(fs)
	pos, code, ok := parseCommand(fs, args, e, enqueueSynopsis)
	if !ok {
		return code
	}
	var err error
	if len(pos) < 1 || len(pos) > 2 || (o.lines && len(pos) != 1) {
		return usageErr(e, "enqueue takes QUEUE [PAYLOAD], or QUEUE alone with --lines")
	}
	if o.lines {
		e.json = o.json
		return enqueueLines(ctx, g, e, pos[0], o.headers)
	}
	var payload []byte
	if len(pos) == 2 {
		payload = []byte(pos[1])
	} else if payload, err = io.ReadAll(e.stdin); err != nil {
		return fail(e, fmt.Errorf("reading payload from stdin: %w", err))
	}
	c, done, err := connect(ctx, g, e)
	if err != nil {
		return fail(e, err)
	}
	defer done()
	id, err := c.Enqueue(ctx, pos[0], o.headers, payload)
	if err != nil {
		return fail(e, err)
	}
	if o.json {
		_ = json.NewEncoder(e.stdout).Encode(map[string]string{"message_id": id})
	} else {
		fmt.Fprintln(e.stdout, id)
	}
	return exitOK
}

// jsonMessage is one consumed message in --json output.
type jsonMessage struct {
	ID          string `json:"id"`
	Queue       string `json:"queue"`
	FairnessKey string `json:"fairness_key"`
	// Weight is the weight the message carried (fila-weight, or its queue's
	// on_enqueue script); absent when it carried none, and then it counts at
	// its fairness key's weight, which queue stats shows.
	Weight       uint32            `json:"weight,omitempty"`
	AttemptCount uint32            `json:"attempt_count"`
	Headers      map[string]string `json:"headers"`
	PayloadB64   string            `json:"payload_base64"`
	EnqueuedAt   string            `json:"enqueued_at"`
}

// consumeOpts are consume's flags.
type consumeOpts struct {
	count     int
	ack, nack bool
	json      bool
	timeout   time.Duration
}

const consumeSynopsis = "consume QUEUE [--count N] [--timeout DURATION] [--ack|--nack] [--json]"

func consumeFlags(fs *flag.FlagSet) *consumeOpts {
	o := &consumeOpts{}
	fs.IntVar(&o.count, "count", 0, "stop after N messages (0: until interrupted or --timeout)")
	fs.DurationVar(&o.timeout, "timeout", 0, "stop after this long (0: never); with no message by then, exit 3")
	fs.BoolVar(&o.ack, "ack", false, "ack each message (the default)")
	fs.BoolVar(&o.nack, "nack", false, "nack each message instead of acking it")
	fs.BoolVar(&o.json, "json", false, "one JSON object per message")
	return o
}

func consumeCmd(ctx context.Context, g global, args []string, e env) int {
	fs := newFlagSet("consume")
	o := consumeFlags(fs)
	pos, code, ok := parseCommand(fs, args, e, consumeSynopsis)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageErr(e, "consume takes QUEUE")
	}
	if o.ack && o.nack {
		return usageErr(e, "--ack and --nack exclude each other")
	}
	if o.count < 0 || o.count > maxCount {
		return usageErr(e, "--count must be from 0 to %d", maxCount)
	}
	if o.timeout < 0 {
		return usageErr(e, "--timeout must not be negative")
	}
	c, done, err := connect(ctx, g, e)
	if err != nil {
		return fail(e, err)
	}
	defer done()
	// The deadline ends the wait, not the settles: those run without it.
	waitCtx := ctx
	if o.timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	p := &printer{out: e.stdout, json: o.json}
	settle := func(ctx context.Context, m *filav1.Message) error {
		if o.nack {
			return c.Nack(ctx, m, "nacked by fila consume --nack")
		}
		return c.Ack(ctx, m)
	}
	if o.count == 0 {
		err = c.Consume(waitCtx, pos[0], client.ConsumeOptions{MaxInFlight: 1}, func(_ context.Context, m *filav1.Message) error {
			p.print(m)
			if o.nack {
				return errors.New("nacked by fila consume --nack")
			}
			return nil
		})
	} else {
		err = consumeCount(waitCtx, c, pos[0], o.count, p, settle)
	}
	// --timeout ending the wait is no failure, even when it ends it before
	// the stream is open (a busy machine, a short timeout), or when filad
	// ends the stream at the deadline a moment before the client's own
	// context says so.
	waitEnded := o.timeout > 0 && ctx.Err() == nil && (waitCtx.Err() != nil || status.Code(err) == codes.DeadlineExceeded)
	if err != nil && !waitEnded {
		return fail(e, err)
	}
	if o.timeout > 0 && p.printed == 0 && ctx.Err() == nil {
		fmt.Fprintf(e.stderr, "fila: no message arrived in %s\n", o.timeout)
		return exitNothing
	}
	return exitOK
}

// maxLineBytes is the longest line --lines reads.
const maxLineBytes = 64 << 20

// maxCount is the largest --count: the broker's max_in_flight limit.
const maxCount = 10_000

// consumeCount leases exactly n messages: the stream asks for max_in_flight
// n, so the broker leases no more than that; it closes the stream before
// settling any, so none is leased to it behind the last.
func consumeCount(ctx context.Context, c *client.Client, queue string, n int, p *printer, settle func(context.Context, *filav1.Message) error) error {
	streamCtx, closeStream := context.WithCancel(ctx)
	defer closeStream()
	stream, err := c.Lease(streamCtx, queue, uint32(n))
	if err != nil {
		return err
	}
	type received struct {
		m    *filav1.Message
		span trace.Span
		ctx  context.Context
	}
	got := make([]received, 0, n)
	for len(got) < n {
		m, err := stream.Next()
		if err != nil {
			if _, deadline := ctx.Deadline(); ctx.Err() != nil || (deadline && status.Code(err) == codes.DeadlineExceeded) {
				break // interrupted, or the wait's deadline ended the stream: settle what arrived
			}
			return err
		}
		spanCtx, span := c.StartProcessSpan(ctx, queue, m)
		p.print(m)
		got = append(got, received{m, span, spanCtx})
	}
	closeStream()
	for _, r := range got {
		err := settle(context.WithoutCancel(r.ctx), r.m)
		r.span.End()
		if err != nil {
			return err
		}
	}
	return nil
}

// printer writes consumed messages as text or JSON lines.
type printer struct {
	out     io.Writer
	json    bool
	printed int
}

func (p *printer) print(m *filav1.Message) {
	p.printed++
	md := m.GetMetadata()
	if !p.json {
		fmt.Fprintf(p.out, "%s  key=%s  attempt=%d  %d bytes  %s\n", m.GetId(), md.GetFairnessKey(), md.GetAttemptCount(), len(m.GetPayload()), payloadText(m.GetPayload()))
		return
	}
	_ = json.NewEncoder(p.out).Encode(jsonMessage{
		ID: m.GetId(), Queue: md.GetQueueId(), FairnessKey: md.GetFairnessKey(), Weight: md.GetWeight(),
		AttemptCount: md.GetAttemptCount(), Headers: m.GetHeaders(),
		PayloadB64: base64.StdEncoding.EncodeToString(m.GetPayload()),
		EnqueuedAt: m.GetTimestamps().GetEnqueuedAt().AsTime().UTC().Format(time.RFC3339Nano),
	})
}

// Bulk load limits of enqueue --lines: a batch is cut at whichever comes
// first. filad's defaults are 1000 items and 16 MiB (server.max_batch_items,
// server.max_batch_bytes); a filad set lower refuses a batch whole, and
// sendLines then sends it in halves.
const (
	linesBatchItems = 1000
	linesBatchBytes = 4 << 20
)

// enqueueLines sends each stdin line as a message, in order: batches of
// lines go one at a time, each asking filad to stop at the first refused
// line (client.EnqueueOrdered), so the queue holds the lines in input order
// and, on a failure, exactly the lines before the failing one. It prints
// each stored line's id in input order, on a terminal shows progress on
// stderr, and always ends with the count and the time taken.
func enqueueLines(ctx context.Context, g global, e env, queue string, headers map[string]string) int {
	c, done, err := connect(ctx, g, e)
	if err != nil {
		return fail(e, err)
	}
	defer done()
	l := &lineLoader{c: c, e: e, queue: queue, headers: headers, out: bufio.NewWriter(e.stdout),
		progress: isTerminal(e.stderr), start: time.Now()}
	lines, readErr, stop := readLines(e.stdin)
	defer stop()
	// A batch is what has been read by the time the one before is
	// answered (up to the limits): a slow producer's lines go at once,
	// a file's fill whole batches.
	var next []byte
	for err == nil {
		var batch [][]byte
		size := 0
		if next != nil {
			batch, size, next = [][]byte{next}, len(next), nil
		} else {
			select {
			case line, ok := <-lines:
				if !ok {
					break
				}
				batch, size = [][]byte{line}, len(line)
			case <-ctx.Done():
			}
		}
	fill:
		for len(batch) > 0 && len(batch) < linesBatchItems {
			select {
			case line, ok := <-lines:
				if !ok {
					break fill
				}
				if size+len(line) > linesBatchBytes {
					next = line
					break fill
				}
				batch, size = append(batch, line), size+len(line)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			break // stdin ended, or interrupted
		}
		err = l.send(ctx, batch)
		_ = l.out.Flush()
	}
	switch {
	case err != nil:
	case ctx.Err() != nil:
		err = fmt.Errorf("interrupted: nothing from line %d on was stored", l.stored+1)
	case errors.Is(readErr(), bufio.ErrTooLong):
		err = fmt.Errorf("line %d is longer than fila reads (%d MiB; filad's limit is server.max_message_bytes): nothing from it on was stored", l.stored+1, maxLineBytes>>20)
	case readErr() != nil:
		err = fmt.Errorf("line %d: reading stdin: %w", l.stored+1, readErr())
	}
	_ = l.out.Flush()
	if l.progress {
		fmt.Fprint(e.stderr, "\r")
	}
	fmt.Fprintf(e.stderr, "%d enqueued in %.1f s\n", l.stored, time.Since(l.start).Seconds())
	if err != nil {
		fmt.Fprintln(e.stderr, "fila:", err)
		return exitError
	}
	return exitOK
}

// readLines reads r's lines in the background. lines is closed at the end
// of r (or on stop), and then readErr says why; stop ends the reading.
func readLines(r io.Reader) (lines <-chan []byte, readErr func() error, stop func()) {
	ch := make(chan []byte, 2*linesBatchItems)
	done := make(chan struct{})
	var err error
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), maxLineBytes)
		for sc.Scan() {
			select {
			case ch <- append([]byte(nil), sc.Bytes()...):
			case <-done:
				return
			}
		}
		err = sc.Err()
	}()
	// err is read only after ch is closed, which the goroutine does after
	// setting it.
	return ch, func() error { return err }, func() { close(done) }
}

// stoppedAt is the error of a load that stopped at line l.stored+1, with
// nothing after it stored.
func (l *lineLoader) stoppedAt(err error) error {
	n := l.stored + 1
	return fmt.Errorf("line %d: %s; nothing from line %d on was stored: rerun from there (tail -n +%d FILE | fila enqueue %s --lines)",
		n, describe(err), n, n, l.queue)
}

// lineLoader is the state of one enqueue --lines.
type lineLoader struct {
	c        *client.Client
	e        env
	queue    string
	headers  map[string]string
	out      *bufio.Writer
	progress bool
	start    time.Time
	stored   int // lines stored so far: the next line's number is stored+1
}

// send enqueues batch, the lines after the l.stored first, and prints their
// ids; its error names the first line not stored and whether any line
// after it could have been.
func (l *lineLoader) send(ctx context.Context, batch [][]byte) error {
	first := l.stored + 1
	// An interrupt lands between batches: the one on its way is answered,
	// so the ids printed are exactly what was stored.
	results, err := l.c.EnqueueOrdered(context.WithoutCancel(ctx), l.queue, l.headers, batch)
	if code := status.Code(err); len(batch) > 1 && (code == codes.InvalidArgument || code == codes.ResourceExhausted) {
		// Refused whole (over filad's batch limits): nothing of it was
		// stored, so its halves can go in turn.
		half := len(batch) / 2
		if err := l.send(ctx, batch[:half]); err != nil {
			return err
		}
		return l.send(ctx, batch[half:])
	}
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal:
			return fmt.Errorf("lines %d to %d: %s; filad may have stored some of them before the call broke: check the queue before a rerun from line %d",
				first, first+len(batch)-1, describe(err), first)
		}
		return l.stoppedAt(err)
	}
	for _, r := range results {
		if r.Err != nil {
			return l.stoppedAt(r.Err)
		}
		l.stored++
		if l.e.json {
			_ = json.NewEncoder(l.out).Encode(struct {
				Line      int    `json:"line"`
				MessageID string `json:"message_id"`
			}{l.stored, r.ID})
		} else {
			fmt.Fprintln(l.out, r.ID)
		}
	}
	if l.progress {
		fmt.Fprintf(l.e.stderr, "\r%d enqueued", l.stored)
	}
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// tlsConfig is the client's TLS config from --tls-*, or nil for plaintext.
func (g global) tlsConfig() (*tls.Config, error) {
	if g.tlsCA == "" {
		if g.tlsCert != "" || g.tlsKey != "" {
			return nil, errors.New("--tls-cert and --tls-key need --tls-ca")
		}
		return nil, nil
	}
	ca, err := os.ReadFile(g.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("--tls-ca: no PEM certificate in %s", g.tlsCA)
	}
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if g.tlsCert != "" || g.tlsKey != "" {
		pair, err := tls.LoadX509KeyPair(g.tlsCert, g.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}
