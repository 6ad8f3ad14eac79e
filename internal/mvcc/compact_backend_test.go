package mvcc

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/ember-kv/ember/internal/wire"
)

// loadFinished loads st's backend as a restarting member does and runs the removal Load resumes
// to its end.
func loadFinished(t testing.TB, st *State) *State {
	t.Helper()
	loaded, _, err := Load(st.backend)
	if err != nil {
		t.Fatal(err)
	}
	for loaded.CompactStep(stepChanges) {
	}
	checkTreesAgree(t, loaded)
	return loaded
}

// A removal the file holds complete is not resumed by the next Load: resuming it visits every
// version at or below the compaction revision (at a million keys, seconds of work under the
// apply lock and beside the next member's load) to remove nothing.
func TestLoad_FinishedRemoval_NotResumed(t *testing.T) {
	st := NewOnDisk(testBackend(t, 0))
	for round := range 2 {
		for i := range 10 {
			stPut(t, st, fmt.Sprintf("k%02d", i), fmt.Sprint(round), 0)
		}
	}
	stDelete(t, st, "k03", "")
	if code := compactFully(st, st.Rev()); code != wire.CodeOK {
		t.Fatalf("compact: code %d", code)
	}
	if err := st.Commit(5); err != nil {
		t.Fatal(err)
	}
	loaded, _, err := Load(st.backend)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.CompactPending() {
		t.Fatal("Load resumes a removal the file holds complete")
	}
	checkTreesAgree(t, loaded)
	if got, want := stateReadings(t, loaded, 10, nil), stateReadings(t, st, 10, nil); got != want {
		t.Fatalf("loaded state differs:\n got %s\nwant %s", got, want)
	}
}

// A removal the file does not hold complete is resumed by Load, whatever was committed of it:
// nothing of it, part of it, or all of an earlier compaction's and part of a later one's; and a
// defragmented copy taken while it is pending does not claim it done.
func TestLoad_UnfinishedRemoval_Resumed(t *testing.T) {
	const nKeys = 10
	history := func(t testing.TB, st *State) {
		for round := range 3 {
			for i := range nKeys {
				stPut(t, st, fmt.Sprintf("k%02d", i), fmt.Sprint(round), 0)
			}
			stDelete(t, st, fmt.Sprintf("k%02d", round), "")
		}
	}
	for _, tc := range []struct {
		name string
		// compact compacts st (a state on disk) as the case says and returns the state whose
		// backend Load reads.
		compact func(t testing.TB, st *State) *State
	}{
		{"applied only", func(t testing.TB, st *State) *State {
			st.Compact(st.Rev() - 5)
			return st
		}},
		{"partly removed", func(t testing.TB, st *State) *State {
			st.Compact(st.Rev() - 5)
			st.CompactStep(3)
			st.CompactStep(3)
			return st
		}},
		{"earlier one removed, later one partly", func(t testing.TB, st *State) *State {
			compactFully(st, 12)
			if err := st.Commit(1); err != nil {
				t.Fatal(err)
			}
			st.Compact(st.Rev() - 5)
			st.CompactStep(3)
			return st
		}},
		{"defragmented copy", func(t testing.TB, st *State) *State {
			st.Compact(st.Rev() - 5)
			st.CompactStep(3)
			if err := st.Commit(1); err != nil {
				t.Fatal(err)
			}
			c := NewOnDisk(testBackend(t, 0))
			if err := st.CopyTo(c.backend, 0, 2); err != nil {
				t.Fatal(err)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, disk := New(), NewOnDisk(testBackend(t, 0))
			history(t, mem)
			history(t, disk)
			file := tc.compact(t, disk)
			if err := disk.Commit(2); err != nil {
				t.Fatal(err)
			}
			loaded, _, err := Load(file.backend)
			if err != nil {
				t.Fatal(err)
			}
			if !loaded.CompactPending() {
				t.Fatal("Load does not resume a removal the file holds unfinished")
			}
			compactFully(mem, disk.CompactRev())
			if got, want := stateReadings(t, loadFinished(t, file), nKeys, nil), stateReadings(t, mem, nKeys, nil); got != want {
				t.Fatalf("loaded state, its removal finished, differs:\n got %s\nwant %s", got, want)
			}
		})
	}
}

// Whenever a commit happens during random writes, compactions and removal steps, what a
// restarting member loads, once the removal Load resumes (if any) is done, holds nothing a
// compaction drops (Check) and reads as the committed state does with its removal done: the file
// never says a removal is done before it holds all of it.
func TestLoad_ResumedRemoval_AnyCommitPoint(t *testing.T) {
	const nKeys = 12
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ctl := rand.New(rand.NewSource(seed))
			wMem, wDisk := rand.New(rand.NewSource(seed+100)), rand.New(rand.NewSource(seed+100))
			mem, disk := New(), NewOnDisk(testBackend(t, 0))
			loads, unfinished := 0, 0
			for op := range 150 {
				switch p := ctl.Intn(10); {
				case p < 5:
					n := 1 + ctl.Intn(4)
					randomHistory(t, mem, wMem, n, nKeys)
					randomHistory(t, disk, wDisk, n, nKeys)
				case p < 6 && disk.rev > disk.compactRev:
					rev := disk.compactRev + 1 + ctl.Int63n(disk.rev-disk.compactRev)
					mem.Compact(rev)
					disk.Compact(rev)
				case p < 8:
					n := 1 + ctl.Intn(8)
					mem.CompactStep(n)
					disk.CompactStep(n)
				}
				if ctl.Intn(3) != 0 {
					continue
				}
				if err := disk.Commit(uint64(op)); err != nil {
					t.Fatal(err)
				}
				loaded, _, err := Load(disk.backend)
				if err != nil {
					t.Fatal(err)
				}
				loads++
				if loaded.CompactPending() {
					unfinished++
				}
				want := mem.Clone()
				for want.CompactStep(stepChanges) {
				}
				if got, want := stateReadings(t, loadFinished(t, disk), nKeys, nil), stateReadings(t, want, nKeys, nil); got != want {
					t.Fatalf("op %d: loaded state, its removal finished, differs:\n got %s\nwant %s", op, got, want)
				}
			}
			if unfinished == 0 || unfinished == loads {
				t.Fatalf("%d of %d loads resumed a removal: the cases are not both covered", unfinished, loads)
			}
		})
	}
}
