// Command fila drives filad from the shell.
//
//	fila [--addr host:port] [--version] COMMAND [--help]
//	fila queue create NAME [--visibility-timeout-ms N] [--fairness-key-header H]
//	fila queue delete NAME
//	fila queue list
//	fila queue stats NAME
//	fila enqueue QUEUE [PAYLOAD] [-H key=value]...     (payload from stdin when absent)
//	fila enqueue QUEUE --lines [-H key=value]...       (one message per stdin line, in order)
//	fila consume QUEUE [--count N] [--timeout DURATION] [--ack|--nack] [--json]
//	fila completion bash|zsh|fish
//
// The address comes from --addr, else FILA_ADDR, else 127.0.0.1:5555. When
// OTEL_EXPORTER_OTLP_ENDPOINT is set, fila exports its own spans there, so
// `fila enqueue` and `fila consume` appear in the broker's traces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/fila-dev/filad/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the broker refused or could not be reached
	exitUsage = 2 // bad command line
	// exitNothing: consume --timeout ended with no message; scripts can
	// tell an empty queue from a failure.
	exitNothing = 3
)

// env is the part of the environment fila reads.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// json: the command's --json; it prints the answer as JSON.
	json bool
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	g, rest, err := parseGlobal(args, getenv)
	switch {
	case errors.Is(err, flag.ErrHelp) || (err == nil && len(rest) > 0 && rest[0] == "help"):
		fmt.Fprint(stdout, usage)
		return exitOK
	case err != nil:
		fmt.Fprintln(stderr, "fila:", err)
		fmt.Fprint(stderr, usage)
		return exitUsage
	case g.version:
		fmt.Fprintln(stdout, "fila", telemetry.VersionLine())
		return exitOK
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "fila: unknown command %q\n%s", rest[0], usage)
		return exitUsage
	}
	return cmd(ctx, g, rest[1:], e)
}

const usage = `usage:
  fila [--addr host:port] [--api-key KEY] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]] [--version] COMMAND [--help]
  fila queue create NAME [config flags: --visibility-timeout-ms --fairness-key-header --max-depth
                         --max-bytes --max-attempts --retry-initial-ms --retry-max-ms
                         --retry-multiplier --dead-letter]
  fila queue update NAME [config flags]            (only the flags given change)
  fila queue delete NAME                           (and its dead-letter queue)
  fila queue list | stats NAME
  fila queue peek NAME [--limit N] [--payload]
  fila queue redrive NAME.dlq [--count N]
  fila queue purge NAME [--yes]
  fila config set KEY VALUE | get KEY | list [PREFIX]
  fila throttle set KEY RATE[,BURST] | rm KEY | list
  fila key create NAME [--allow PATTERN=ACTION[,ACTION]]... [--superadmin] [--expires DURATION]
  fila key revoke NAME | list | set-acl KEY_ID [--allow ...]... | get-acl KEY_ID
  fila enqueue QUEUE [PAYLOAD] [-H key=value]...   (payload from stdin when absent)
  fila enqueue QUEUE --lines [-H key=value]...     (one message per stdin line, in order)
  fila consume QUEUE [--count N] [--timeout DURATION] [--ack|--nack] [--json]
  fila admin backup FILE [--force]                 (online and consistent; filad restore FILE --data-dir DIR)
  fila cluster status | nodes | partitions         (the answering node's view of its cluster)
  fila cluster add-node ID INTERNAL_ADDR | remove-node ID | transfer-leader PARTITION NODE
  fila completion bash|zsh|fish
Every command that prints data takes --json. The address is --addr, else $FILA_ADDR, else
127.0.0.1:5555; the API key --api-key, else $FILA_API_KEY. Exit status: 0 done, 1 filad refused
or could not be reached, 2 bad command line, 3 consume --timeout ended with no message.
`
