package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// adminSubcommands are built per call: --force writes into force.
func adminSubcommands(force *bool) map[string]subcommandSpec {
	return map[string]subcommandSpec{
		"backup": {synopsis: "admin backup FILE [--force]   (an online, consistent backup; restore it with `filad restore FILE --data-dir DIR`; --force replaces an existing FILE)",
			min: 1, max: 1, flags: func(fs *flag.FlagSet) {
				fs.BoolVar(force, "force", false, "replace FILE if it exists")
			}},
	}
}

// adminCmd is the broker-wide operations: `fila admin backup FILE`.
func adminCmd(ctx context.Context, g global, args []string, e env) int {
	var force bool
	_, pos, code, ok := subcommand("admin", args, &e, adminSubcommands(&force))
	if !ok {
		return code
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		start := time.Now()
		n, err := backup(ctx, admin, pos[0], force)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "backed up %d bytes to %s in %.1f s\n", n, pos[0], time.Since(start).Seconds())
		return nil
	})
}

// backup writes the Backup stream to path, whole or not at all: into a
// temporary file beside it, synced, then renamed. An existing file is
// replaced only with force: a backup is often the only copy of something,
// and a typo must not destroy it.
func backup(ctx context.Context, admin filav1.FilaAdminClient, path string, force bool) (int64, error) {
	// Before the stream: a bad target is found before the whole store is read.
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return 0, fmt.Errorf("admin backup: %s is a directory; give a file name", path)
	} else if err == nil && !force {
		return 0, fmt.Errorf("admin backup: %s exists; give --force to replace it", path)
	}
	if path == "-" {
		return 0, errors.New("admin backup: give a file name (writing to stdout is not supported)")
	}
	stream, err := admin.Backup(ctx, &filav1.BackupRequest{})
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".partial-*")
	if err != nil {
		return 0, fmt.Errorf("admin backup: cannot write beside %s: %w", path, errors.Unwrap(err))
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	defer f.Close()
	var n int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		w, err := f.Write(chunk.GetData())
		if n += int64(w); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return n, os.Rename(f.Name(), path)
}
