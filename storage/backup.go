package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// A backup file is backupMagic, then badger's backup stream, then a
// trailer: trailerMagic and the stream's length in 8 bytes. badger's Load
// takes a stream cut at a record boundary as complete, so the trailer is
// what tells a whole backup from a truncated one.
const (
	backupMagic  = "filad-backup v1\n"
	trailerMagic = "filadEND"
	trailerBytes = len(trailerMagic) + 8
)

// Backup writes a consistent snapshot of the whole store to w while it
// serves: everything committed before Backup began, in badger's backup
// format, between a header line and a trailer. A batch committed meanwhile
// is in it whole or not at all (badger reads at one timestamp). w's error
// stops it.
func (s *Badger) Backup(w io.Writer) error {
	s.mu.RLock() // Close waits for a backup in progress
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if _, err := io.WriteString(w, backupMagic); err != nil {
		return err
	}
	cw := &countingWriter{w: w}
	if _, err := s.db.Backup(cw, 0); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	trailer := binary.BigEndian.AppendUint64([]byte(trailerMagic), uint64(cw.n))
	_, err := w.Write(trailer)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore loads the backup file at path, written by Backup, into dir, which
// must not exist or be empty, and closes the store: filad started on dir
// then serves what was committed when the backup began. It writes into a
// directory beside dir and renames it into place once whole, so a failed
// restore (a truncated file, a full disk) leaves no half store at dir.
func Restore(path, dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("storage: restore into %s: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("storage: restore into %s: the directory is not empty (restore into a new one)", dir)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	defer f.Close()
	length, err := checkBackup(f)
	if err != nil {
		return fmt.Errorf("storage: restore: %s: %w", path, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), filepath.Base(dir)+".partial-*")
	if err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	s, err := Open(Options{Dir: tmp, SyncWrites: true})
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, int64(len(backupMagic)), length), 1<<20)
	if err := s.db.Load(r, 256); err != nil {
		_ = s.Close()
		return fmt.Errorf("storage: restore: %w", err)
	}
	if err := s.Close(); err != nil {
		return err
	}
	_ = os.Remove(dir) // the empty directory, if there was one
	return os.Rename(tmp, dir)
}

// checkBackup reads f's header and trailer and returns the length of the
// badger stream between them.
func checkBackup(f *os.File) (int64, error) {
	notOne := errors.New("not a filad backup (it does not start with " + fmt.Sprintf("%q", backupMagic) + ")")
	head := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, []byte(backupMagic)) {
		return 0, notOne
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	trailer := make([]byte, trailerBytes)
	if size < int64(len(backupMagic)+trailerBytes) {
		return 0, errors.New("the backup is truncated (no trailer)")
	}
	if _, err := f.ReadAt(trailer, size-int64(trailerBytes)); err != nil {
		return 0, err
	}
	length := int64(binary.BigEndian.Uint64(trailer[len(trailerMagic):]))
	if !bytes.Equal(trailer[:len(trailerMagic)], []byte(trailerMagic)) || length != size-int64(len(backupMagic)+trailerBytes) {
		return 0, errors.New("the backup is truncated or damaged (its trailer does not match its length)")
	}
	return length, nil
}
