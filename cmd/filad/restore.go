package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fila-dev/filad/storage"
)

// restore is `filad restore FILE --data-dir DIR`: offline, it writes a
// backup made by `fila admin backup` into a new data directory, which a
// filad started on it then serves.
func restore(args []string) error {
	fs := flag.NewFlagSet("filad restore", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "the new data directory (must not exist, or be empty)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: filad restore FILE --data-dir DIR   (FILE from `fila admin backup`)")
		fs.PrintDefaults()
	}
	fs.SetOutput(io.Discard) // errors are returned once, with the usage line
	// Flags may come after FILE: parse what is around it.
	usage := badUsage("usage: filad restore FILE --data-dir DIR")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.Usage()
			return nil
		}
		return badUsage("%w; %w", err, usage)
	}
	rest := fs.Args()
	if len(rest) > 0 {
		if err := fs.Parse(rest[1:]); err != nil {
			return badUsage("%w; %w", err, usage)
		}
		rest = append(rest[:1], fs.Args()...)
	}
	if len(rest) != 1 || *dir == "" {
		return usage
	}
	if err := storage.Restore(rest[0], *dir); err != nil {
		return err
	}
	fmt.Printf("restored %s into %s\n", rest[0], *dir)
	return nil
}
