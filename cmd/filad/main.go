// Command filad is the fila broker: a durable, fair message broker serving
// fila.v1 over gRPC.
//
//	filad [--config fila.toml] [--data-dir DIR]
//	filad version | --version
//	filad health [--addr host:port] [--tls-ca FILE]
//	filad restore FILE --data-dir DIR
//
// With no config file it runs on the embedded defaults (127.0.0.1:5555,
// ./data). SIGINT or SIGTERM stops it gracefully; SIGHUP reloads the TLS
// certificate.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry"
)

// Exit statuses, as fila's: 1 for a failure (a bad config, a store that
// will not open, a probe that fails), 2 for a bad command line, which a
// script can tell apart without reading the message.
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "filad:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(exitUsage)
		}
		os.Exit(exitFailure)
	}
}

// usageError is a bad command line: filad exits 2 for it.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// badUsage marks err as a bad command line.
func badUsage(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// filadUsage is the command line's first usage line; -h adds the flags.
const filadUsage = "usage: filad [--config FILE] [--data-dir DIR] | filad version | filad health [--addr ADDR] | filad restore FILE --data-dir DIR"

// parseFlags parses args into fs. Asked for help (-h), it prints usage
// and fs's flags to stdout and says so (help: the command is done, and
// it is not a failure). A bad flag is a usage error naming the flag, with
// the usage line, reported once by main (fs itself prints nothing).
func parseFlags(fs *flag.FlagSet, args []string, usage string) (help bool, err error) {
	fs.SetOutput(io.Discard)
	err = fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(os.Stdout)
		fmt.Fprintln(os.Stdout, usage)
		fs.PrintDefaults()
		return true, nil
	}
	if err != nil {
		return false, badUsage("%w; %s", err, usage)
	}
	return false, nil
}

func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Println("filad", telemetry.VersionLine())
			return nil
		case "health":
			return health(args[1:])
		case "restore":
			return restore(args[1:])
		}
	}
	fs := flag.NewFlagSet("filad", flag.ContinueOnError)
	cfgPath := fs.String("config", "fila.toml", "path to the config file (a missing fila.toml means all defaults)")
	dataDir := fs.String("data-dir", "", "data directory (overrides storage.data_dir)")
	version := fs.Bool("version", false, "print the version and exit")
	if help, err := parseFlags(fs, args, filadUsage); help || err != nil {
		return err
	}
	if *version {
		fmt.Println("filad", telemetry.VersionLine())
		return nil
	}
	if fs.NArg() > 0 {
		return badUsage("unexpected argument %q; %s", fs.Arg(0), filadUsage)
	}
	cfg, err := config.Load(*cfgPath, nil)
	if err != nil {
		return err
	}
	if flagSet(fs, "data-dir") {
		if *dataDir == "" {
			return badUsage("--data-dir: must not be empty (leave the flag out for storage.data_dir)")
		}
		cfg.Storage.DataDir = *dataDir
	}
	log := newLogger(cfg.Log.SlogLevel())
	slog.SetDefault(log)
	for _, w := range config.EnvWarnings(os.Environ()) {
		log.Warn(w)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The GC works harder as the heap nears the memory alarm's limit, so
		// the alarm trips on real growth rather than on garbage.
		if limit := server.MemoryLimit(cfg.Limits); limit > 0 {
			debug.SetMemoryLimit(limit)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The data directory's lock makes this filad its only one, so its pid
	// file names "this filad": kill -HUP $(cat data/filad.pid). It is
	// written once the lock is held and before filad serves, so that it
	// is there when filad is seen serving.
	pidFile := filepath.Join(cfg.Storage.DataDir, PidFile)
	wrote := false
	srv, err := server.Start(ctx, cfg, server.Options{Logger: log, Owned: func() {
		if err := writePid(pidFile); err != nil {
			log.Warn("no pid file", slog.String("path", pidFile), slog.Any("error", err))
			return
		}
		wrote = true
	}})
	if wrote {
		defer removePid(pidFile)
	}
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case <-hup:
			// SIGHUP reloads the TLS certificate and client CAs.
			if err := srv.ReloadTLS(); err != nil {
				log.Error("TLS reload failed; the previous certificate stays in use", slog.Any("error", err))
			} else {
				log.Info("TLS certificate reloaded")
			}
		case <-ctx.Done():
			log.Info("shutting down", slog.String("signal", "received"))
			break wait
		case err := <-srv.Served():
			log.Error("gRPC server stopped", slog.Any("error", err))
			break wait
		}
	}
	// Shutdown has its own bound (server.shutdown_timeout_ms); a second
	// signal is not needed to make it finish.
	return srv.Shutdown(context.Background())
}

// PidFile is the name of the file in the data directory that holds the
// running filad's process id; it is removed when filad stops (a kill -9
// leaves it, and the next start writes it again).
const PidFile = "filad.pid"

// writePid writes this process's id to path, whole or not at all.
func writePid(path string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// removePid removes path if it still names this process.
func removePid(path string) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		_ = os.Remove(path)
	}
}

// flagSet reports whether name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// newLogger writes JSON when stderr is not a terminal and text when it is.
func newLogger(level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
