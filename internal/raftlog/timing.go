package raftlog

import (
	"time"

	"github.com/hashicorp/raft"
)

// timedLog times raft's log appends, ember's counterpart of etcd's WAL fsync: each one is a
// bbolt commit or a WAL write, and so an fsync.
type timedLog struct {
	raft.LogStore
	observe func(time.Duration)
}

func (t *timedLog) IsMonotonic() bool { return IsMonotonic(t.LogStore) }

func (t *timedLog) StoreLog(l *raft.Log) error {
	defer t.since(time.Now())
	return t.LogStore.StoreLog(l)
}

func (t *timedLog) StoreLogs(logs []*raft.Log) error {
	defer t.since(time.Now())
	return t.LogStore.StoreLogs(logs)
}

func (t *timedLog) since(start time.Time) { t.observe(time.Since(start)) }
