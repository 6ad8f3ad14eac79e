package mvcc

import (
	"errors"
	"fmt"
	"slices"

	"github.com/ember-kv/ember/internal/wire"
)

// DedupWindow is how many log entries a request ID is remembered for. A retry comes within
// seconds of its original, far inside this window.
const DedupWindow = 100_000

// Bytes of the dedup table: every remembered request ID costs DedupRecordBytes (its ID and log
// index) plus its encoded result. A result of at most DedupShortResult bytes (a put or delete
// without a previous value, a lease grant, any failure) is always held; the longer ones share
// the budget (NewApplier) and are replaced, oldest first, by a short result that says only
// "applied at revision R, result not held" (wire.CodeResultNotHeld). The table thus holds at
// most DedupWindow × (DedupRecordBytes + DedupShortResult) bytes plus the budget.
const (
	DedupRecordBytes = 24
	DedupShortResult = 32
)

// Logger receives what an Applier finds wrong with entries it applies anyway (an hclog.Logger
// is one).
type Logger interface {
	Error(msg string, args ...any)
}

// Applier is the replicated state machine without raft: it applies the commands of the log to
// a State, answering a retried command (one whose request ID it remembers) from the dedup table
// instead of applying it twice. Members that apply the same entries hold identical states.
//
// An Applier is not safe for concurrent use; its owner serializes Apply, CompactStep and
// SetState, and takes read views with State().Clone() under the same lock.
type Applier struct {
	log Logger
	st  *State

	dedupOrder []dedupRef // request IDs in apply order, for expiry; live from dedupHead on
	dedupHead  int
	dedupFull  int   // dedupOrder from here on may hold results longer than DedupShortResult
	dedupLong  int64 // bytes of the results longer than DedupShortResult: at most budget
	dedupBytes int64 // bytes of the whole table, as the DedupRecordBytes comment counts them

	// budget caps dedupLong. It is a local setting, yet the table is replicated state. That is
	// safe because the budget only decides whether a retry is answered with its full result or
	// with CodeResultNotHeld: which request IDs are remembered, and so whether a command
	// applies, depends on log indexes alone (DedupWindow), the same on every member. Members
	// with equal budgets make the same choices (by result sizes and log order), hold identical
	// tables and write identical snapshots; a member with a different budget answers some
	// retries differently, both answers honest, and trims a restored snapshot's table to its
	// own budget.
	budget int64

	probe   DedupEntry // a search key for Apply's lookup, which would otherwise escape to the heap
	scratch []byte     // remember's encoding buffer
}

type dedupRef struct {
	index uint64
	id    wire.RequestID
}

// NewApplier returns an Applier on an empty state whose long dedup results share budget bytes.
func NewApplier(log Logger, budget int64) *Applier {
	return &Applier{log: log, st: New(), budget: budget}
}

// State is the state applied so far. It is the Applier's own: read it under the owner's lock,
// or through a Clone taken under it.
func (a *Applier) State() *State { return a.st }

// DedupBytes is the size of the dedup table, as the DedupRecordBytes comment counts it.
func (a *Applier) DedupBytes() int64 { return a.dedupBytes }

// LeaseChange tells the lessor what the log did to a lease.
type LeaseChange struct {
	ID          int64
	TTL         int64 // granted TTL, for a grant
	Revoked     bool
	Checkpoint  bool
	RemainingMs int64 // for a checkpoint
}

// Applied is what applying one command did.
type Applied struct {
	Result    *wire.Result
	Events    []Event       // the changes of the command's revision, for watchers
	Leases    []LeaseChange // for the lessor
	Compacted bool          // a compaction was applied: its removal is pending (CompactStep)
}

// Apply applies the command entry at raft index index. It fails for an entry that does not match
// its checksum (wire.ErrChecksum), which must not be applied: this member's copy of the log is
// damaged, and applying anything, or skipping the entry, would make it diverge. It fails with
// ErrCorrupt when the state's backend lost a value the command read: the state can no
// longer be trusted, and the owner must stop applying.
func (a *Applier) Apply(index uint64, data []byte) (Applied, error) {
	// data outlives the apply, and nothing applying a txn keeps its bytes.
	cmd, err := wire.UnmarshalCommandShared(data)
	if errors.Is(err, wire.ErrChecksum) {
		return Applied{}, err
	}
	if err != nil {
		// Intact but undecodable: only members append to the log and they validate what they
		// propose, so this is a bug. Failing the one entry keeps every member identical.
		a.log.Error("undecodable log entry", "index", index, "error", err)
		return Applied{Result: &wire.Result{Code: wire.CodeMalformed, Revision: a.st.rev}}, nil
	}
	if !cmd.ID.IsZero() {
		a.probe.ID = cmd.ID
		if e, ok := a.st.dedup.Get(&a.probe); ok {
			res, err := wire.UnmarshalResult(e.Result)
			if err != nil {
				// Encoded by remember or checked by ReadSnapshot: this is a bug. The same
				// answer on every member keeps them identical.
				a.log.Error("undecodable remembered result", "index", index, "error", err)
				res = &wire.Result{Code: wire.CodeMalformed, Revision: a.st.rev}
			}
			return Applied{Result: res}, nil
		}
	}
	if cmd.RetryFloor > 0 && index >= cmd.RetryFloor+DedupWindow {
		// The first attempt, if it was applied, is no longer remembered: refuse the retry so
		// that the command never applies twice. The proposer reports an unknown outcome.
		res := &wire.Result{Code: wire.CodeTimeout, Revision: a.st.rev}
		a.remember(cmd.ID, index, res)
		return Applied{Result: res}, nil
	}
	out := a.execute(cmd)
	if err := a.st.Damage(); err != nil {
		return Applied{}, err
	}
	if !cmd.ID.IsZero() {
		a.remember(cmd.ID, index, out.Result)
	}
	return out, nil
}

func (a *Applier) execute(cmd *wire.Command) Applied {
	st := a.st
	if len(st.alarms) > 0 {
		if code := refusedByAlarm(st, cmd); code != wire.CodeOK {
			return Applied{Result: &wire.Result{Code: code, Revision: st.rev}}
		}
	}
	if cmd.AuthRev != 0 {
		if a := st.Auth(); a.Enabled && cmd.AuthRev < a.Rev {
			return Applied{Result: &wire.Result{Code: wire.CodeAuthOldRevision, Revision: st.rev}}
		}
	}
	switch cmd.Kind {
	case wire.KindTxn:
		if code := ValidateTxn(cmd.Txn, 0); code != wire.CodeOK {
			return Applied{Result: &wire.Result{Code: code, Revision: st.rev}}
		}
		if cmd.LeaseTTL != 0 {
			res, evs := st.ApplyGrantTxn(cmd.LeaseID, cmd.LeaseTTL, cmd.Txn)
			out := Applied{Result: res, Events: evs}
			if res.Code == wire.CodeOK {
				out.Leases = []LeaseChange{{ID: cmd.LeaseID, TTL: cmd.LeaseTTL}}
			}
			return out
		}
		res, evs := st.ApplyTxn(cmd.Txn)
		return Applied{Result: res, Events: evs}
	case wire.KindCompact:
		code := st.Compact(cmd.Revision)
		return Applied{Result: &wire.Result{Code: code, Revision: st.rev}, Compacted: code == wire.CodeOK}
	case wire.KindLeaseGrant:
		code := st.GrantLease(cmd.LeaseID, cmd.LeaseTTL)
		out := Applied{Result: &wire.Result{Code: code, Revision: st.rev, LeaseID: cmd.LeaseID, LeaseTTL: cmd.LeaseTTL}}
		if code == wire.CodeOK {
			out.Leases = []LeaseChange{{ID: cmd.LeaseID, TTL: cmd.LeaseTTL}}
		}
		return out
	case wire.KindLeaseRevoke:
		code, evs := st.RevokeLease(cmd.LeaseID)
		out := Applied{Result: &wire.Result{Code: code, Revision: st.rev}}
		if code == wire.CodeOK {
			out.Events, out.Leases = evs, []LeaseChange{{ID: cmd.LeaseID, Revoked: true}}
		}
		return out
	case wire.KindLeaseCheckpoint:
		applied := st.CheckpointLeases(cmd.Checkpoints)
		lcs := make([]LeaseChange, len(applied))
		for i, cp := range applied {
			lcs[i] = LeaseChange{ID: cp.ID, Checkpoint: true, RemainingMs: cp.RemainingMs}
		}
		return Applied{Result: &wire.Result{Revision: st.rev}, Leases: lcs}
	case wire.KindAlarm:
		st.setAlarm(Alarm{Member: cmd.NodeID, Type: cmd.AlarmType}, cmd.AlarmAction == wire.AlarmActivate)
		return Applied{Result: &wire.Result{Revision: st.rev}}
	case wire.KindAuth:
		return Applied{Result: &wire.Result{Code: st.applyAuth(cmd.Auth), Revision: st.rev}}
	default: // wire.KindLeaderStart: a marker; its apply tells the new leader the log is caught up
		return Applied{Result: &wire.Result{Revision: st.rev}}
	}
}

// remember stores a result for deduplication, expires entries older than the window, and keeps
// the long results within the budget.
func (a *Applier) remember(id wire.RequestID, index uint64, res *wire.Result) {
	// Encoded into a reused buffer and copied once: appending to nil grows it two or three
	// times.
	a.scratch = res.Marshal(a.scratch[:0])
	b := slices.Clone(a.scratch)
	if cap(a.scratch) > 4<<10 {
		a.scratch = nil // a large result's buffer is not kept for the small ones
	}
	if len(b) > DedupShortResult && int64(len(b)) > a.budget {
		// Held, it would push every other long result out and then itself.
		b = shortResult(res.Code, res.Revision)
	}
	a.st.Remember(&DedupEntry{ID: id, Index: index, Result: b})
	a.count(b, 1)
	a.dedupOrder = append(a.dedupOrder, dedupRef{index: index, id: id})
	for a.dedupHead < len(a.dedupOrder) && a.dedupOrder[a.dedupHead].index+DedupWindow < index {
		if e, ok := a.st.Forget(a.dedupOrder[a.dedupHead].id); ok {
			a.count(e.Result, -1)
		}
		a.dedupHead++
	}
	a.dedupFull = max(a.dedupFull, a.dedupHead)
	a.trimResults()
	// Expired refs are dropped from the front in bulk once they are an eighth of the live ones:
	// shifting the live ones on every apply would copy the whole window (100k refs) per write;
	// this copies about eight refs per write, and keeps the array (its high-water mark is its
	// size) within 1.125 windows instead of the two that waiting for half of it took.
	if a.dedupHead > 0 && 8*a.dedupHead >= len(a.dedupOrder)-a.dedupHead {
		a.dedupOrder = a.dedupOrder[:copy(a.dedupOrder, a.dedupOrder[a.dedupHead:])]
		a.dedupFull -= a.dedupHead
		a.dedupHead = 0
	}
}

// count adds (sign 1) or removes (sign -1) one remembered result from the table's byte counts.
func (a *Applier) count(result []byte, sign int64) {
	n := int64(len(result))
	a.dedupBytes += sign * (DedupRecordBytes + n)
	if n > DedupShortResult {
		a.dedupLong += sign * n
	}
}

// trimResults replaces the oldest long results by short ones until the long ones fit the
// budget. Every entry before dedupFull holds a short result, so each entry is looked at once.
func (a *Applier) trimResults() {
	for a.dedupLong > a.budget && a.dedupFull < len(a.dedupOrder) {
		e, ok := a.st.Remembered(a.dedupOrder[a.dedupFull].id)
		a.dedupFull++
		if !ok || len(e.Result) <= DedupShortResult {
			continue
		}
		code, rev, err := wire.ResultHead(e.Result)
		if err != nil {
			// Encoded by remember or checked by ReadSnapshot: this is a bug. CodeMalformed, as
			// Apply answers such an entry, is the same on every member.
			a.log.Error("undecodable remembered result", "index", e.Index, "error", err)
			code, rev = wire.CodeMalformed, a.st.rev
		}
		short := shortResult(code, rev)
		// A new entry, not e changed in place: read views and snapshots share e.
		a.st.Remember(&DedupEntry{ID: e.ID, Index: e.Index, Result: short})
		a.count(e.Result, -1)
		a.count(short, 1)
	}
}

// shortResult is what is held of a result that is not held in full: a failure keeps its code,
// which says all there is (failures carry no payload); a success becomes CodeResultNotHeld at
// its revision, so that a retry learns it was applied but never gets a made-up response.
func shortResult(code wire.Code, rev int64) []byte {
	if code == wire.CodeOK {
		code = wire.CodeResultNotHeld
	}
	return (&wire.Result{Code: code, Revision: rev}).Marshal(nil)
}

// SetState replaces the state (a restored snapshot), rebuilds the expiry order of its request
// IDs and their byte counts, and trims the results to this Applier's budget (a snapshot from a
// member with a larger one may hold more). st becomes the Applier's own.
func (a *Applier) SetState(st *State) {
	a.st = st
	a.dedupOrder, a.dedupHead, a.dedupFull = a.dedupOrder[:0], 0, 0
	a.dedupBytes, a.dedupLong = 0, 0
	st.ScanRemembered(func(e *DedupEntry) bool {
		a.dedupOrder = append(a.dedupOrder, dedupRef{index: e.Index, id: e.ID})
		a.count(e.Result, 1)
		return true
	})
	// By apply index, the order entries expire in.
	slices.SortFunc(a.dedupOrder, func(x, y dedupRef) int {
		switch {
		case x.index < y.index:
			return -1
		case x.index > y.index:
			return 1
		}
		return 0
	})
	a.trimResults()
}

// Check verifies the dedup bookkeeping against the table it describes, as State.Check does the
// state's indexes: the byte counts recomputed from the entries, the long results within the
// budget, the expiry order holding exactly the table's request IDs by apply index, and no long
// result before the trim cursor.
func (a *Applier) Check() error {
	var all, long int64
	n := 0
	a.st.ScanRemembered(func(e *DedupEntry) bool {
		n++
		all += DedupRecordBytes + int64(len(e.Result))
		if len(e.Result) > DedupShortResult {
			long += int64(len(e.Result))
		}
		return true
	})
	switch {
	case all != a.dedupBytes || long != a.dedupLong:
		return fmt.Errorf("dedup counts: %d bytes, %d long; recomputed %d, %d", a.dedupBytes, a.dedupLong, all, long)
	case long > a.budget:
		return fmt.Errorf("dedup table holds %d bytes of long results, budget %d", long, a.budget)
	case a.dedupHead > a.dedupFull || a.dedupFull > len(a.dedupOrder) || len(a.dedupOrder)-a.dedupHead != n:
		return fmt.Errorf("dedup order: head %d, trim cursor %d, %d refs for %d entries", a.dedupHead, a.dedupFull, len(a.dedupOrder), n)
	}
	live := a.dedupOrder[a.dedupHead:]
	for i, ref := range live {
		e, ok := a.st.Remembered(ref.id)
		switch {
		case !ok || e.Index != ref.index:
			return fmt.Errorf("dedup order: %v@%d is not in the table", ref.id, ref.index)
		case i > 0 && live[i-1].index > ref.index:
			return fmt.Errorf("dedup order: index %d after %d", ref.index, live[i-1].index)
		case a.dedupHead+i < a.dedupFull && len(e.Result) > DedupShortResult:
			return fmt.Errorf("dedup entry %d before the trim cursor holds a %d-byte result", ref.index, len(e.Result))
		}
	}
	return nil
}
