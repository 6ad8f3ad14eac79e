package mvcc

import (
	"math/rand"
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
	newest := func(st *State) *Record { r, _ := st.revs.Max(); return r }
	// insert puts r in history and revs only, as a write that forgot latest would.
	insert := func(st *State, r *Record) {
		st.history.Set(r)
		st.revs.Set(r)
		st.size += r.Size()
	}
	tests := []struct {
		name   string
		damage func(st *State)
		wErr   string
	}{
		{name: "record missing from history", damage: func(st *State) { st.history.Delete(newest(st)) }, wErr: "history does not"},
		{name: "record missing from revs", damage: func(st *State) { st.revs.Delete(newest(st)) }, wErr: "revs holds"},
		{name: "size off", damage: func(st *State) { st.size++ }, wErr: "add up to"},
		{name: "latest behind history", damage: func(st *State) {
			insert(st, &Record{Key: "k00", Mod: st.rev + 1, Create: st.rev + 1, Version: 1})
			st.rev++
		}, wErr: "is not its newest record"},
		{name: "deleted key still in latest", damage: func(st *State) {
			st.latest.Set(&Record{Key: "zz", Mod: 1, Create: 1, Version: 1})
		}, wErr: "latest holds"},
		{name: "superseded version left", damage: func(st *State) {
			var kept *Record // a version at or below the compaction revision, which supersedes older ones
			st.history.Scan(func(r *Record) bool {
				if r.Mod <= st.compactRev && !r.Tombstone() {
					kept = r
				}
				return kept == nil
			})
			insert(st, &Record{Key: kept.Key, Mod: 1, Create: 1, Version: 1})
		}, wErr: "survived the compaction"},
		{name: "old tombstone left", damage: func(st *State) {
			insert(st, &Record{Key: "zz", Mod: 1})
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
