package ember

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Open refuses a damaged raft.db with ErrCorrupt, in-process, where bbolt itself would crash.
func TestOpen_TruncatedRaftDBRefused(t *testing.T) {
	dir, _ := dfPrepareDir(t, 10000, 1, WithLogStore(LogStoreBolt))
	path := filepath.Join(dir, "raft.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err == nil {
		s.Close()
		t.Fatal("a truncated raft.db was opened")
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open: %v, want ErrCorrupt", err)
	}
}
