package ember

import (
	"math"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Keeping the raft log for a member that installs a snapshot.
//
// At every snapshot raft truncates the leader's log to its last TrailingLogs entries. A member
// further behind gets a snapshot, then the entries after it; if the writes add more than
// TrailingLogs entries while the snapshot is sent and installed (a large state under steady
// writes: 3 GB take 20 s and more), those entries are gone when the member asks for them, and it
// needs another snapshot, and another, for as long as the writes go on. (Consul's advice is to
// raise raft_trailing_logs by hand.) So from the moment the leader opens a snapshot to send, raft
// keeps its whole log, until no send is under way and every member that answers has applied to
// within TrailingLogs/2 entries of the log's end; or until logHoldMax has passed, so that a
// member that never catches up cannot fill the disk.
type logHold struct {
	// mu guards the fields below, and orders the changes of TrailingLogs.
	mu       sync.Mutex
	trailing uint64    // TrailingLogs as configured, given back when the hold ends
	sending  int       // snapshot streams open for sending
	since    time.Time // when the hold began; zero when none is on
}

// logHoldMax bounds a hold; logHoldCheck is how often the members are asked how far they are.
const (
	logHoldMax   = 10 * time.Minute
	logHoldCheck = time.Second
)

// snapshotSending holds the log while a snapshot is sent (snapshotStore.Open calls it); the
// returned func tells the send is over.
func (s *Store) snapshotSending() (done func()) {
	h := &s.logHold
	h.mu.Lock()
	h.sending++
	start := h.since.IsZero()
	if start {
		h.since = time.Now()
		s.setTrailingLogs(math.MaxUint64)
	}
	h.mu.Unlock()
	if start {
		s.spawn(s.watchLogHold) // false only once closing, when raft truncates nothing more
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.sending--
			h.mu.Unlock()
		})
	}
}

// watchLogHold ends the hold once no send is under way and the members have caught up, or
// logHoldMax after it began; or returns when the member closes.
func (s *Store) watchLogHold() {
	h := &s.logHold
	s.every(logHoldCheck, func() bool {
		h.mu.Lock()
		sending, since, trailing := h.sending, h.since, h.trailing
		h.mu.Unlock()
		if sending > 0 {
			return true
		}
		overdue := time.Since(since) > logHoldMax
		if !overdue && !s.membersCaughtUp(trailing/2) {
			return true
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.sending > 0 {
			return true // a send began meanwhile: go on holding
		}
		h.since = time.Time{}
		s.setTrailingLogs(h.trailing)
		if overdue {
			s.log.Warn("members still behind after the raft log was kept for them; raft may truncate it again", "held", time.Since(since).Round(time.Second))
		}
		return false
	})
}

// membersCaughtUp reports whether this member leads no more, or every other member that answers
// has applied to within slack entries of the log's end.
func (s *Store) membersCaughtUp(slack uint64) bool {
	if s.raft.State() != raft.Leader {
		return true
	}
	conf, err := s.configuration()
	if err != nil {
		return false
	}
	last := s.raft.LastIndex()
	for _, srv := range conf.Servers {
		if string(srv.ID) == s.id {
			continue
		}
		applied, err := s.memberApplied(s.ctx, string(srv.Address))
		if err != nil {
			continue // down or cut off: not catching up now, whatever the log keeps
		}
		if applied+slack < last {
			return false
		}
	}
	return true
}

// setTrailingLogs changes raft's TrailingLogs, which it reads at its next snapshot. Callers hold
// logHold.mu.
func (s *Store) setTrailingLogs(n uint64) {
	rc := s.raft.ReloadableConfig()
	rc.TrailingLogs = n
	if err := s.raft.ReloadConfig(rc); err != nil {
		s.log.Warn("cannot change raft's TrailingLogs", "to", n, "error", err)
	}
}
