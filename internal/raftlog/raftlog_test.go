package raftlog

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// failingGets fails every GetLog with err once set.
type failingGets struct {
	raft.LogStore
	err atomic.Pointer[error]
}

func (f *failingGets) IsMonotonic() bool { return IsMonotonic(f.LogStore) }

func (f *failingGets) GetLog(index uint64, l *raft.Log) error {
	if err := f.err.Load(); err != nil {
		return *err
	}
	return f.LogStore.GetLog(index, l)
}

// hooks are a member's Options with what they were called with.
type hooks struct {
	appends atomic.Int32
	stops   atomic.Int32
	cause   atomic.Pointer[error]
	gets    *failingGets
}

func (h *hooks) options() Options {
	return Options{
		Wrap: func(l raft.LogStore, s raft.StableStore) (raft.LogStore, raft.StableStore) {
			h.gets = &failingGets{LogStore: l}
			return h.gets, s
		},
		ObserveAppend: func(time.Duration) { h.appends.Add(1) },
		FailStop: func(cause error) {
			h.stops.Add(1)
			h.cause.Store(&cause)
		},
	}
}

func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte(fmt.Sprint("e", i))}
}

// Every layer Open puts in front of the store passes raft's IsMonotonic through (a WAL must be
// cleared whole after a snapshot install), and appends to a log on disk are timed.
func TestOpen_Chain(t *testing.T) {
	tests := []struct {
		name      string
		dir       string
		kind      Kind
		wMono     bool
		wAppends  int32
		wDiskSize bool
	}{
		{"wal", t.TempDir(), WAL, true, 2, true},
		{"bolt", t.TempDir(), Bolt, false, 2, true},
		{"in memory", "", 0, false, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h hooks
			l, err := Open(tt.dir, tt.kind, h.options())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.Kind != tt.kind {
				t.Errorf("Kind = %v, want %v", l.Kind, tt.kind)
			}
			if got := IsMonotonic(l.Logs); got != tt.wMono {
				t.Errorf("IsMonotonic through the chain = %v, want %v", got, tt.wMono)
			}
			if err := l.Logs.StoreLog(entry(1)); err != nil {
				t.Fatal(err)
			}
			if err := l.Logs.StoreLogs([]*raft.Log{entry(2), entry(3)}); err != nil {
				t.Fatal(err)
			}
			if got := h.appends.Load(); got != tt.wAppends {
				t.Errorf("%d appends timed, want %d", got, tt.wAppends)
			}
			if got := l.DiskSize() > 0; got != tt.wDiskSize {
				t.Errorf("DiskSize = %d", l.DiskSize())
			}
		})
	}
}

// A read error raft would panic on goes back to the caller while the log is not armed (Open
// reports it), and once armed stops the member once and ends the reading goroutine, as raft's
// own would be. A missing (compacted) entry is no failure.
func TestGuard_ReadFailureStopsOnceArmed(t *testing.T) {
	var h hooks
	l, err := Open("", 0, h.options())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Logs.StoreLog(entry(1)); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := l.Logs.GetLog(7, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("missing entry: %v", err)
	}
	eio := fmt.Errorf("read: %w", syscall.EIO)
	h.gets.err.Store(&eio)
	if err := l.Logs.GetLog(1, &got); !errors.Is(err, syscall.EIO) || h.stops.Load() != 0 {
		t.Fatalf("unarmed read failure: %v, %d stops; want EIO returned and no stop", err, h.stops.Load())
	}

	l.Arm()
	for range 2 {
		returned := make(chan bool, 1)
		go func() {
			ended := true // stays set unless GetLog returns
			defer func() { returned <- !ended }()
			l.Logs.GetLog(1, &got)
			ended = false
		}()
		if <-returned {
			t.Fatal("an armed read failure returned to raft")
		}
	}
	if n := h.stops.Load(); n != 1 {
		t.Fatalf("FailStop called %d times, want once", n)
	}
	cause := *h.cause.Load()
	if !errors.Is(cause, syscall.EIO) || cause.Error() != "storage failure in reading raft log entry 1: read: input/output error" {
		t.Fatalf("cause %q, want the read failure", cause)
	}
}
