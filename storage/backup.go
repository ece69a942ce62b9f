package storage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// backupMagic starts every backup file, so that restore refuses anything
// else with a clear error rather than half-loading it.
const backupMagic = "filad-backup v1\n"

// Backup writes a consistent snapshot of the whole store to w while it
// serves: everything committed before Backup began, in badger's backup
// format, after a header line. A batch committed meanwhile is in it whole
// or not at all (badger reads at one timestamp). w's error stops it.
func (s *Badger) Backup(w io.Writer) error {
	s.mu.RLock() // Close waits for a backup in progress
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if _, err := io.WriteString(w, backupMagic); err != nil {
		return err
	}
	if _, err := s.db.Backup(w, 0); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	return nil
}

// Restore loads a backup written by Backup into dir, which must not exist
// or be empty, and closes the store: filad started on dir then serves what
// was committed when the backup began.
func Restore(r io.Reader, dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("storage: restore into %s: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("storage: restore into %s: the directory is not empty (restore into a new one)", dir)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	head := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(br, head); err != nil || !bytes.Equal(head, []byte(backupMagic)) {
		return errors.New("storage: restore: not a filad backup (it does not start with " + fmt.Sprintf("%q", backupMagic) + ")")
	}
	s, err := Open(Options{Dir: dir, SyncWrites: true})
	if err != nil {
		return err
	}
	if err := s.db.Load(br, 256); err != nil {
		_ = s.Close()
		return fmt.Errorf("storage: restore: %w", err)
	}
	return s.Close()
}
