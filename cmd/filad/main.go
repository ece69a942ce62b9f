// Command filad is the fila broker: a durable, fair message broker serving
// fila.v1 over gRPC.
//
//	filad [--config fila.toml] [--data-dir DIR]
//
// With no config file it runs on the embedded defaults (127.0.0.1:5555,
// ./data). SIGINT or SIGTERM stops it gracefully.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/server"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "filad:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("filad", flag.ContinueOnError)
	cfgPath := fs.String("config", "fila.toml", "path to the config file (a missing fila.toml means all defaults)")
	dataDir := fs.String("data-dir", "", "data directory (overrides storage.data_dir)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger()
	slog.SetDefault(log)

	cfg, err := config.Load(*cfgPath, nil)
	if err != nil {
		return err
	}
	if *dataDir != "" {
		cfg.Storage.DataDir = *dataDir
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.Start(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down", slog.String("signal", "received"))
	case err := <-srv.Served():
		log.Error("gRPC server stopped", slog.Any("error", err))
	}
	// Shutdown has its own bound (server.shutdown_timeout_ms); a second
	// signal is not needed to make it finish.
	return srv.Shutdown(context.Background())
}

// newLogger writes JSON when stderr is not a terminal and text when it is.
func newLogger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: logLevel()}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// logLevel reads FILA_LOG_LEVEL (debug, info, warn, error); default info.
func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("FILA_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}
