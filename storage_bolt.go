package ember

import (
	"fmt"
	"os"

	"github.com/ember-kv/ember/internal/boltcheck"
)

// checkBoltFile validates the structure of a bbolt file (raft.db, or raft-wal's metadata)
// before bbolt opens it: bbolt crashes the host process on a damaged file, and this refuses it
// with ErrCorrupt instead (see package boltcheck).
func checkBoltFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := boltcheck.Check(f, fi.Size()); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return nil
}
