package mvcc

import (
	"slices"
	"strings"

	"github.com/ember-kv/ember/internal/wire"
)

// Alarm is a raised alarm: the member it is about and its type (wire.AlarmNoSpace,
// wire.AlarmCorrupt). Alarms are replicated state, as etcd's: every member lists the same.
type Alarm struct {
	Member string
	Type   uint8
}

func compareAlarms(a, b Alarm) int {
	if c := strings.Compare(a.Member, b.Member); c != 0 {
		return c
	}
	return int(a.Type) - int(b.Type)
}

// Alarms returns the raised alarms by member, then type. The slice is st's: do not change it.
func (st *State) Alarms() []Alarm { return st.alarms }

// HasAlarm reports whether an alarm of type typ is raised for any member.
func (st *State) HasAlarm(typ uint8) bool {
	return slices.ContainsFunc(st.alarms, func(a Alarm) bool { return a.Type == typ })
}

// setAlarm raises (on) or clears a. The slice is replaced, never changed in place: clones share
// it.
func (st *State) setAlarm(a Alarm, on bool) {
	i, found := slices.BinarySearchFunc(st.alarms, a, compareAlarms)
	switch {
	case on && !found:
		st.alarms = slices.Insert(slices.Clone(st.alarms), i, a)
		st.markAlarms()
	case !on && found:
		st.alarms = slices.Delete(slices.Clone(st.alarms), i, i+1)
		st.markAlarms()
	}
}

// refusedByAlarm returns the code that refuses cmd while st has alarms raised, or CodeOK. As
// etcd's applier: under CORRUPT, every write (a transaction that writes, a compaction, a lease
// grant or revoke) fails with "corrupt cluster"; under NOSPACE, what adds data fails.
func refusedByAlarm(st *State, cmd *wire.Command) wire.Code {
	if st.HasAlarm(wire.AlarmCorrupt) && Writes(cmd) {
		return wire.CodeCorrupt
	}
	if st.HasAlarm(wire.AlarmNoSpace) && AddsData(cmd) {
		return wire.CodeNoSpace
	}
	return wire.CodeOK
}

// Writes reports whether cmd is one of the requests etcd applies through its log as a write: a
// transaction with a put or delete in any branch (a read-only one etcd serves without the log)
// or granting a lease, a compaction, a lease grant or a lease revoke. These are what a raised CORRUPT alarm refuses.
func Writes(cmd *wire.Command) bool {
	switch cmd.Kind {
	case wire.KindCompact, wire.KindLeaseGrant, wire.KindLeaseRevoke:
		return true
	case wire.KindTxn:
		return cmd.LeaseTTL != 0 || txnWrites(cmd.Txn)
	}
	return false
}

func txnWrites(t *wire.Txn) bool {
	if t == nil {
		return false
	}
	for _, ops := range [][]wire.Op{t.Success, t.Failure} {
		for i := range ops {
			if ops[i].Kind == wire.OpPut || ops[i].Kind == wire.OpDelete || ops[i].Kind == wire.OpTxn && txnWrites(ops[i].Txn) {
				return true
			}
		}
	}
	return false
}

// AddsData reports whether cmd can grow the state: a transaction with a put in any branch (etcd
// refuses those whichever branch would run) or granting a lease, or a lease grant. These are what the space quota,
// and a raised NOSPACE alarm, refuse.
func AddsData(cmd *wire.Command) bool {
	switch cmd.Kind {
	case wire.KindLeaseGrant:
		return true
	case wire.KindTxn:
		return cmd.LeaseTTL != 0 || txnPuts(cmd.Txn)
	}
	return false
}

func txnPuts(t *wire.Txn) bool {
	if t == nil {
		return false
	}
	for _, ops := range [][]wire.Op{t.Success, t.Failure} {
		for i := range ops {
			if ops[i].Kind == wire.OpPut || ops[i].Kind == wire.OpTxn && txnPuts(ops[i].Txn) {
				return true
			}
		}
	}
	return false
}
