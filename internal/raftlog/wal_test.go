package raftlog

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	walfs "github.com/hashicorp/raft-wal/fs"

	"github.com/ember-kv/ember/internal/raftlog/raftlogtest"
)

// openWALDir opens dir's WAL as a member's Open does, bare.
func openWALDir(t testing.TB, dir string) *Log {
	t.Helper()
	l, err := openWALLog(dir, walfs.New(), hclog.NewNullLogger(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// raft truncates a conflicting tail of a follower's log; after a restart the entries before
// the cut must still read (raft-wal v0.4.0 lost the ability to read that segment, see walFiler).
func TestWALStores_TailTruncationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st := openWALDir(t, dir)
	var entries []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		entries = append(entries, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte(fmt.Sprint("e", i))})
	}
	if err := st.Logs.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	if err := st.Logs.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	if err := st.Logs.StoreLogs([]*raft.Log{{Index: 8, Term: 2, Type: raft.LogCommand, Data: []byte("new8")}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openWALDir(t, dir)
	defer st.Close()
	tests := []struct {
		index uint64
		wData string
		wTerm uint64
	}{{1, "e1", 1}, {7, "e7", 1}, {8, "new8", 2}}
	for _, tt := range tests {
		var l raft.Log
		if err := st.Logs.GetLog(tt.index, &l); err != nil {
			t.Fatalf("entry %d after restart: %v", tt.index, err)
		}
		if string(l.Data) != tt.wData || l.Term != tt.wTerm {
			t.Errorf("entry %d = %q term %d, want %q term %d", tt.index, l.Data, l.Term, tt.wData, tt.wTerm)
		}
	}
	if last, err := st.Logs.LastIndex(); err != nil || last != 8 {
		t.Errorf("LastIndex = %d, %v; want 8", last, err)
	}
	var l raft.Log
	if err := st.Logs.GetLog(9, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Errorf("truncated entry 9: %v, want ErrLogNotFound", err)
	}
}

// raft retries an append that failed (a follower's next AppendEntries, a leader's next term).
// raft-wal v0.4.0 kept a failed batch in its segment writer's index (hashicorp/raft-wal#32), so
// the retry and every append after it failed as non-monotonic and the member could not append
// again until restarted. A failed write or sync must leave the log as it was before the batch:
// the retry succeeds, and after a restart the log holds each entry once, as retried.
func TestWALStores_AppendRecoversFromWriteFailure(t *testing.T) {
	entries := func(from, to uint64, tag string) []*raft.Log {
		var ls []*raft.Log
		for i := from; i <= to; i++ {
			ls = append(ls, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte(fmt.Sprint(tag, i))})
		}
		return ls
	}
	tests := []struct {
		name  string
		arm   func(*raftlogtest.FaultyVFS)
		first uint64 // entries before the failing batch: 0 for an empty log
	}{
		{"write fails, empty log", func(v *raftlogtest.FaultyVFS) { v.FailWrites.Store(1) }, 0},
		{"write fails", func(v *raftlogtest.FaultyVFS) { v.FailWrites.Store(1) }, 5},
		// The repair's own write fails too: the next append repairs first.
		{"write and repair fail", func(v *raftlogtest.FaultyVFS) { v.FailWrites.Store(2) }, 5},
		{"sync fails, empty log", func(v *raftlogtest.FaultyVFS) { v.FailSync.Store(true) }, 0},
		{"sync fails", func(v *raftlogtest.FaultyVFS) { v.FailSync.Store(true) }, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			vfs := &raftlogtest.FaultyVFS{VFS: walfs.New()}
			st, err := openWALLog(dir, vfs, hclog.NewNullLogger(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if tt.first > 0 {
				if err := st.Logs.StoreLogs(entries(1, tt.first, "e")); err != nil {
					t.Fatal(err)
				}
			}
			batch := entries(tt.first+1, tt.first+5, "e")
			tt.arm(vfs)
			if err := st.Logs.StoreLogs(batch); !errors.Is(err, raftlogtest.ErrInjectedIO) {
				st.Close()
				t.Fatalf("append with an injected failure: %v", err)
			}
			if last, err := st.Logs.LastIndex(); err != nil || last != tt.first {
				t.Errorf("LastIndex after the failed append = %d, %v; want %d", last, err, tt.first)
			}
			retry := []error{st.Logs.StoreLogs(batch), st.Logs.StoreLogs(entries(tt.first+6, tt.first+6, "e"))}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if err := errors.Join(retry...); err != nil {
				t.Fatalf("appends after the failure: %v", err)
			}

			st = openWALDir(t, dir)
			defer st.Close()
			want := tt.first + 6
			if last, err := st.Logs.LastIndex(); err != nil || last != want {
				t.Fatalf("LastIndex after restart = %d, %v; want %d", last, err, want)
			}
			for i := uint64(1); i <= want; i++ {
				var l raft.Log
				if err := st.Logs.GetLog(i, &l); err != nil || string(l.Data) != fmt.Sprint("e", i) {
					t.Fatalf("entry %d after restart: %q, %v", i, l.Data, err)
				}
			}
		})
	}
}
