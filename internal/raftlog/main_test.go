package raftlog

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: Close ends raft-wal's and bbolt's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
