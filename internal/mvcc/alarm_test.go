package mvcc

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/ember-kv/ember/internal/wire"
)

// While NOSPACE is raised, as etcd's capped applier: puts (in any branch of a transaction) and
// lease grants are refused with CodeNoSpace and change nothing; deletes, reads, revokes and
// compaction apply. Disarming it lets puts apply again. Raising or clearing twice is the same as
// once.
func TestApplier_NoSpaceAlarm(t *testing.T) {
	a := NewApplier(nil, 8<<20)
	index := uint64(0)
	apply := func(cmd *wire.Command) *wire.Result {
		t.Helper()
		index++
		out, err := a.Apply(index, cmd.Marshal(nil))
		if err != nil {
			t.Fatal(err)
		}
		return out.Result
	}
	put := func(k string) *wire.Command {
		return &wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{wirePut(k, "v")}}}
	}
	alarm := func(action uint8, member string) *wire.Command {
		return &wire.Command{Kind: wire.KindAlarm, AlarmAction: action, AlarmType: wire.AlarmNoSpace, NodeID: member}
	}
	if r := apply(&wire.Command{Kind: wire.KindLeaseGrant, LeaseID: 5, LeaseTTL: 60}); r.Code != wire.CodeOK {
		t.Fatalf("grant: %d", r.Code)
	}
	for _, k := range []string{"a", "b"} {
		if r := apply(put(k)); r.Code != wire.CodeOK {
			t.Fatalf("put %s: %d", k, r.Code)
		}
	}
	apply(alarm(wire.AlarmActivate, "m1"))
	apply(alarm(wire.AlarmActivate, "m1"))
	apply(alarm(wire.AlarmActivate, "m2"))
	want := []Alarm{{"m1", wire.AlarmNoSpace}, {"m2", wire.AlarmNoSpace}}
	if got := a.State().Alarms(); !slices.Equal(got, want) {
		t.Fatalf("alarms %+v, want %+v", got, want)
	}
	rev := a.State().Rev()
	nestedPut := &wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Failure: []wire.Op{
		{Kind: wire.OpTxn, Txn: &wire.Txn{Success: []wire.Op{wirePut("c", "v")}}}}}}
	for name, cmd := range map[string]*wire.Command{
		"put":              put("c"),
		"put in a failure": nestedPut,
		"lease grant":      {Kind: wire.KindLeaseGrant, LeaseID: 6, LeaseTTL: 60},
	} {
		if r := apply(cmd); r.Code != wire.CodeNoSpace {
			t.Fatalf("%s under NOSPACE: code %d, want CodeNoSpace", name, r.Code)
		}
	}
	if a.State().Rev() != rev || a.State().LeaseCount() != 1 {
		t.Fatalf("refused commands changed the state: rev %d (want %d), %d leases", a.State().Rev(), rev, a.State().LeaseCount())
	}
	allowed := map[string]*wire.Command{
		"delete":  {Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{wireDel("a", "")}}},
		"range":   {Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{{Kind: wire.OpRange, Key: []byte("b")}}}},
		"revoke":  {Kind: wire.KindLeaseRevoke, LeaseID: 5},
		"compact": {Kind: wire.KindCompact, Revision: rev},
	}
	for _, name := range []string{"delete", "range", "revoke", "compact"} {
		if r := apply(allowed[name]); r.Code != wire.CodeOK {
			t.Fatalf("%s under NOSPACE: code %d", name, r.Code)
		}
	}
	// Every member's alarm must be cleared: one left keeps writes refused.
	apply(alarm(wire.AlarmDeactivate, "m1"))
	if r := apply(put("c")); r.Code != wire.CodeNoSpace {
		t.Fatalf("put with m2's alarm still raised: code %d", r.Code)
	}
	apply(alarm(wire.AlarmDeactivate, "m2"))
	apply(alarm(wire.AlarmDeactivate, "m2"))
	if got := a.State().Alarms(); len(got) != 0 {
		t.Fatalf("alarms after disarming: %+v", got)
	}
	if r := apply(put("c")); r.Code != wire.CodeOK {
		t.Fatalf("put after disarming: code %d", r.Code)
	}
}

// While CORRUPT is raised, as etcd's corrupt applier: every write that goes through the log (a
// transaction with a put or delete in any branch, a compaction, a lease grant or revoke) is
// refused with CodeCorrupt and changes nothing; a read-only transaction, checkpoints and alarms
// apply. CORRUPT is checked before NOSPACE, as etcd wraps its corrupt applier outermost.
func TestApplier_CorruptAlarm(t *testing.T) {
	a := NewApplier(nil, 8<<20)
	index := uint64(0)
	apply := func(cmd *wire.Command) *wire.Result {
		t.Helper()
		index++
		out, err := a.Apply(index, cmd.Marshal(nil))
		if err != nil {
			t.Fatal(err)
		}
		return out.Result
	}
	alarm := func(action, typ uint8) *wire.Command {
		return &wire.Command{Kind: wire.KindAlarm, AlarmAction: action, AlarmType: typ, NodeID: "m2"}
	}
	put := &wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{wirePut("a", "v")}}}
	for _, cmd := range []*wire.Command{{Kind: wire.KindLeaseGrant, LeaseID: 5, LeaseTTL: 60}, put} {
		if r := apply(cmd); r.Code != wire.CodeOK {
			t.Fatalf("before the alarm: code %d", r.Code)
		}
	}
	apply(alarm(wire.AlarmActivate, wire.AlarmCorrupt))
	apply(alarm(wire.AlarmActivate, wire.AlarmNoSpace))
	rev := a.State().Rev()
	tests := []struct {
		name string
		cmd  *wire.Command
		want wire.Code
	}{
		{"put", put, wire.CodeCorrupt},
		{"delete", &wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{wireDel("a", "")}}}, wire.CodeCorrupt},
		{"delete in a nested failure", &wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Failure: []wire.Op{
			{Kind: wire.OpTxn, Txn: &wire.Txn{Success: []wire.Op{wireDel("a", "")}}}}}}, wire.CodeCorrupt},
		{"compact", &wire.Command{Kind: wire.KindCompact, Revision: rev}, wire.CodeCorrupt},
		{"lease grant", &wire.Command{Kind: wire.KindLeaseGrant, LeaseID: 6, LeaseTTL: 60}, wire.CodeCorrupt},
		{"lease revoke", &wire.Command{Kind: wire.KindLeaseRevoke, LeaseID: 5}, wire.CodeCorrupt},
		{"read-only txn", &wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{{Kind: wire.OpRange, Key: []byte("a")}}}}, wire.CodeOK},
		{"checkpoint", &wire.Command{Kind: wire.KindLeaseCheckpoint, Checkpoints: []wire.LeaseCheckpoint{{ID: 5, RemainingMs: 1000}}}, wire.CodeOK},
	}
	for _, tc := range tests {
		if r := apply(tc.cmd); r.Code != tc.want {
			t.Fatalf("%s under CORRUPT: code %d, want %d", tc.name, r.Code, tc.want)
		}
	}
	if a.State().Rev() != rev || a.State().LeaseCount() != 1 || a.State().CompactRev() != 0 {
		t.Fatalf("refused commands changed the state: rev %d (want %d), %d leases, compacted at %d",
			a.State().Rev(), rev, a.State().LeaseCount(), a.State().CompactRev())
	}
	apply(alarm(wire.AlarmDeactivate, wire.AlarmCorrupt))
	if r := apply(put); r.Code != wire.CodeNoSpace {
		t.Fatalf("put with CORRUPT disarmed and NOSPACE raised: code %d, want CodeNoSpace", r.Code)
	}
	if r := apply(&wire.Command{Kind: wire.KindLeaseRevoke, LeaseID: 5}); r.Code != wire.CodeOK {
		t.Fatalf("revoke with CORRUPT disarmed: code %d", r.Code)
	}
}

// Alarms are in snapshots, so a member that installs one, or restarts from one, has them; a
// snapshot with none is what it was before alarms existed (no alarm frame).
func TestSnapshot_Alarms(t *testing.T) {
	st := New()
	if types := frameTypes(t, encodeSnapshot(t, st, 3)); slices.Contains(types, frameAlarms) {
		t.Fatalf("snapshot without alarms has an alarm frame: frames %v", types)
	}
	st.setAlarm(Alarm{Member: "m3", Type: wire.AlarmNoSpace}, true)
	st.setAlarm(Alarm{Member: "m1", Type: wire.AlarmCorrupt}, true)
	got, _, err := ReadSnapshot(bytes.NewReader(encodeSnapshot(t, st, 3)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Alarm{{"m1", wire.AlarmCorrupt}, {"m3", wire.AlarmNoSpace}}
	if !slices.Equal(got.Alarms(), want) || !got.HasAlarm(wire.AlarmNoSpace) {
		t.Fatalf("alarms after the round trip %+v, want %+v", got.Alarms(), want)
	}
	// A clone shares the alarms but not later changes to them.
	c := got.Clone()
	got.setAlarm(Alarm{Member: "m1", Type: wire.AlarmCorrupt}, false)
	if !slices.Equal(c.Alarms(), want) {
		t.Fatalf("clone changed with its source: %+v", c.Alarms())
	}
}

// frameTypes lists the types of a snapshot's frames, in order.
func frameTypes(t testing.TB, data []byte) []byte {
	t.Helper()
	var types []byte
	for pos := len(snapshotMagic); pos < len(data); {
		n, k := binary.Uvarint(data[pos+1:])
		if k <= 0 {
			t.Fatalf("bad frame length at %d", pos)
		}
		types = append(types, data[pos])
		pos += 1 + k + int(n)
	}
	return types
}
