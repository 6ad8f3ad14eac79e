package mvcc

import (
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/ember-kv/ember/internal/wire"
)

// TestState_Check_FindsDamage damages each index of a consistent state in turn: Check must name
// the disagreement, so that the tests relying on it cannot pass on a state it fails to inspect.
func TestState_Check_FindsDamage(t *testing.T) {
	build := func(t *testing.T) *State {
		st := New()
		randomHistory(t, st, rand.New(rand.NewSource(3)), 60, 10)
		sCompact(30)(t, st)
		if err := st.Check(); err != nil {
			t.Fatalf("undamaged state: %v", err)
		}
		return st
	}
	// withOlder is the first key with an older version.
	withOlder := func(st *State) *Record {
		var k *Record
		st.keys.Ascend(func(r *Record) bool {
			if len(r.older()) > 1 {
				k = r
			}
			return k == nil
		})
		return k
	}
	// add makes r the oldest version of its key, as a write that skipped the checks would.
	add := func(st *State, r *Record) {
		if k := st.newest(r.Key); k != nil {
			st.keys.ReplaceOrInsert(k.withOlder(append([]verRef{refOf(r)}, k.older()...)))
		} else {
			st.keys.ReplaceOrInsert(r)
		}
		st.revs.Set(r)
		st.size += r.Size()
		st.versions++
	}
	tests := []struct {
		name   string
		damage func(st *State)
		wErr   string
	}{
		{name: "version missing from its key", damage: func(st *State) {
			k := withOlder(st)
			st.keys.ReplaceOrInsert(k.withOlder(k.older()[1:]))
		}, wErr: "history does not"},
		{name: "version missing from revs", damage: func(st *State) {
			k := withOlder(st)
			st.revs.Delete(&Record{Mod: k.older()[0].mod, Sub: k.older()[0].sub})
		}, wErr: "missing"},
		{name: "newest missing from revs", damage: func(st *State) { r, _ := st.revs.Max(); st.revs.Delete(r) }, wErr: "revs holds"},
		{name: "versions out of order", damage: func(st *State) {
			k := withOlder(st)
			o := slices.Clone(k.older())
			o[0], o[1] = o[1], o[0]
			st.keys.ReplaceOrInsert(k.withOlder(o))
		}, wErr: "out of order"},
		{name: "listed length off", damage: func(st *State) {
			k := withOlder(st)
			o := slices.Clone(k.older())
			o[0].vlen += 3
			st.keys.ReplaceOrInsert(k.withOlder(o))
		}, wErr: "is listed as"},
		{name: "size off", damage: func(st *State) { st.size++ }, wErr: "add up to"},
		{name: "live keys off", damage: func(st *State) { st.liveKeys++ }, wErr: "counted live"},
		{name: "versions off", damage: func(st *State) { st.versions-- }, wErr: "versions counted"},
		{name: "superseded version left", damage: func(st *State) {
			var kept *Record // a version at or below the compaction revision, which supersedes older ones
			st.eachVersion(func(r *Record, _ int64) bool {
				if r.Mod <= st.compactRev && !r.Tombstone() {
					kept = r
				}
				return kept == nil
			})
			add(st, &Record{Key: kept.Key, Mod: 1, Create: 1, Version: 1})
		}, wErr: "survived the compaction"},
		{name: "old tombstone left", damage: func(st *State) {
			add(st, &Record{Key: "zz", Mod: 1})
		}, wErr: "survived the compaction"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := build(t)
			tc.damage(st)
			if err := st.Check(); err == nil || !strings.Contains(err.Error(), tc.wErr) {
				t.Fatalf("Check: %v, want an error containing %q", err, tc.wErr)
			}
		})
	}
	// While a removal is pending, what it has yet to remove is not damage.
	st := New()
	stPut(t, st, "a", "1", 0)
	stPut(t, st, "a", "2", 0)
	if code := st.Compact(3); code != wire.CodeOK {
		t.Fatalf("compact: code %d", code)
	}
	if err := st.Check(); err != nil {
		t.Fatalf("pending removal: %v", err)
	}
}
