package main

import (
	"flag"
	"fmt"

	"github.com/fila-dev/filad/storage"
)

// restore is `filad restore FILE --data-dir DIR`: offline, it writes a
// backup made by `fila admin backup` into a new data directory, which a
// filad started on it then serves.
func restore(args []string) error {
	fs := flag.NewFlagSet("filad restore", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "the new data directory (must not exist, or be empty)")
	const usage = "usage: filad restore FILE --data-dir DIR   (FILE from `fila admin backup`)"
	// Flags may come after FILE: parse what is around it.
	if help, err := parseFlags(fs, args, usage); help || err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 {
		if help, err := parseFlags(fs, rest[1:], usage); help || err != nil {
			return err
		}
		rest = append(rest[:1], fs.Args()...)
	}
	if len(rest) != 1 || *dir == "" {
		return badUsage(usage)
	}
	if err := storage.Restore(rest[0], *dir); err != nil {
		return err
	}
	fmt.Printf("restored %s into %s\n", rest[0], *dir)
	return nil
}
