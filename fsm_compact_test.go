package ember

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// overwriteCmd puts n keys in one revision.
func overwriteCmd(id uint64, n int, val string) *wire.Command {
	ops := make([]wire.Op, n)
	for i := range ops {
		ops[i] = wirePut(fmt.Sprintf("k%05d", i), val)
	}
	return txnCmd(id, &wire.Txn{Success: ops})
}

// compactionFSM returns a detached fsm holding n keys written twice (n superseded versions), at
// revision 3, with nothing compacted yet.
func compactionFSM(t testing.TB, n int) *fsmDriver {
	t.Helper()
	d := &fsmDriver{f: detachedFSM(t)}
	for i, val := range []string{"old", "new"} {
		if res := d.apply(t, overwriteCmd(uint64(i+1), n, val)); res.Code != wire.CodeOK {
			t.Fatalf("overwrite: code %d", res.Code)
		}
	}
	return d
}

// TestFSM_Compact_ApplyIsBounded applies a compaction of 3 steps' worth of superseded versions:
// applying it must remove at most a bounded number of records, so that the write applied next
// goes in before the removal is done; reads below the compaction revision fail meanwhile; each
// step removes a bounded number; and the result is the fully compacted state.
func TestFSM_Compact_ApplyIsBounded(t *testing.T) {
	n := 3 * compactStepRecords
	d := compactionFSM(t, n)
	f := d.f
	before := f.app.State().Versions()
	if res := d.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: 3}); res.Code != wire.CodeOK {
		t.Fatalf("compact: code %d", res.Code)
	}
	if removed := before - f.app.State().Versions(); removed > 2*compactStepRecords {
		t.Fatalf("applying the compaction removed %d versions: the apply is not bounded", removed)
	}
	if res := d.apply(t, putCmd(3, "late", "x", 0)); res.Code != wire.CodeOK || res.Revision != 4 {
		t.Fatalf("put after compact: code %d revision %d", res.Code, res.Revision)
	}
	if !f.app.State().CompactPending() {
		t.Fatal("the removal completed before the next write was applied")
	}
	want := f.app.State().Clone() // what the removal must leave: the same state, fully compacted
	for want.CompactStep(1 << 30) {
	}
	v := f.view().st
	if _, code := v.CheckRev(2); code != wire.CodeCompacted {
		t.Fatalf("read at 2 during the removal: code %d, want compacted", code)
	}
	if _, count, _, code := v.RangeRecords(&wire.Op{Kind: wire.OpRange, Key: []byte("k00000"), End: []byte{0}, Revision: 3, CountOnly: true}); code != wire.CodeOK || count != int64(n) {
		t.Fatalf("count at the compaction revision during the removal: %d code %d", count, code)
	}

	// A snapshot taken now restores to the compacted state.
	data := snapshotStream(t, f)

	steps := 0
	for {
		before := f.app.State().Versions()
		more, _ := f.compactStep()
		steps++
		if removed := before - f.app.State().Versions(); removed > 2*compactStepRecords {
			t.Fatalf("step %d removed %d versions", steps, removed)
		}
		if !more {
			break
		}
	}
	if steps < 3 || f.app.State().CompactPending() {
		t.Fatalf("removal took %d steps, pending %v: want at least 3, done", steps, f.app.State().CompactPending())
	}
	if got, want := f.app.State().Versions(), n+1; got != want {
		t.Fatalf("%d versions after the removal, want %d (the new ones and late)", got, want)
	}
	assertSameState(t, want, f.app.State())
	if err := f.app.State().Check(); err != nil {
		t.Fatal(err)
	}
	if f.sizeInUse.Load() != f.app.State().Size() {
		t.Fatalf("size in use %d, state size %d", f.sizeInUse.Load(), f.app.State().Size())
	}

	// Restoring that snapshot into a member with a removal of its own pending replaces it: the
	// backend stream holds the removal as far as it had got, and the restored member finishes
	// it.
	r := compactionFSM(t, 10)
	r.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: 2})
	if err := r.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	for stepCompaction(r.f) {
	}
	assertSameState(t, want, r.f.app.State())
}

// readingsAt renders the reads a client can make of st at rev: a full scan, a limited range
// scan and each key alone. Two states with equal readings are indistinguishable at rev.
func readingsAt(st *mvcc.State, rev int64, nKeys int) string {
	ops := []wire.Op{
		{Kind: wire.OpRange, Key: []byte{0}, End: []byte{0}, Revision: rev},
		{Kind: wire.OpRange, Key: []byte("k05"), End: []byte("k12"), Revision: rev, Limit: 3},
	}
	for i := range nKeys {
		ops = append(ops, wire.Op{Kind: wire.OpRange, Key: []byte(fmt.Sprintf("k%02d", i)), Revision: rev})
	}
	var b strings.Builder
	for i := range ops {
		recs, count, more, code := st.RangeRecords(&ops[i])
		fmt.Fprintf(&b, "code %d n%d m%v:", code, count, more)
		for _, r := range recs {
			v, ok := st.Value(r)
			fmt.Fprintf(&b, "%q=%q(%v) c%d m%d v%d,", r.Key, v, ok, r.Create, r.Mod, r.Version)
		}
		b.WriteString(";")
	}
	return b.String()
}

// TestFSM_Compact_ConcurrentReaders reads read views from several goroutines while the compactor
// removes a compaction in steps and writes go on: every read at the compaction revision and every
// hash there must be the fully compacted state's. Run with -race: steps mutate the live trees
// that the views share nodes with.
func TestFSM_Compact_ConcurrentReaders(t *testing.T) {
	d := compactionFSM(t, 4*compactStepRecords)
	f := d.f
	ref := f.app.State().Clone()
	ref.Compact(3)
	for ref.CompactStep(compactStepRecords) {
	}
	wantRead, wantHash := readingsAt(ref, 3, 30), mustHash(t, ref, 3)

	ctx, cancel := context.WithCancel(context.Background())
	var compactor sync.WaitGroup
	compactor.Add(1)
	go func() {
		defer compactor.Done()
		f.runCompactor(ctx)
	}()
	defer func() {
		cancel()
		compactor.Wait()
	}()

	d.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: 3})
	stop := make(chan struct{})
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				st := f.view().st
				if got := readingsAt(st, 3, 30); got != wantRead {
					errs <- fmt.Errorf("read at 3 during the removal: %s, want %s", got, wantRead)
					return
				}
				if got, err := st.Hash(3); err != nil || got != wantHash {
					errs <- fmt.Errorf("hash at 3 during the removal: %08x, want %08x", got, wantHash)
					return
				}
			}
		}()
	}
	for i := 0; i < 100; i++ {
		d.apply(t, putCmd(uint64(10+i), fmt.Sprintf("w%03d", i%7), "x", 0))
	}
	close(stop)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// A second compaction, which may find the first still pending.
	d.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: 50})
	if err := f.waitCompacted(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.app.State().CompactPending() || f.app.State().CompactRev() != 50 {
		t.Fatalf("after waitCompacted: pending %v compactRev %d", f.app.State().CompactPending(), f.app.State().CompactRev())
	}
	// Check also finds any version the removal should have dropped.
	if err := f.app.State().Check(); err != nil {
		t.Fatal(err)
	}
}

// TestStore_Compact_Physical checks that WithCompactPhysical returns once the removal is done on
// this member: the records are gone and the size in use shows it.
func TestStore_Compact_Physical(t *testing.T) {
	s := openMem(t)
	ctx := emberTestCtx(t)
	var rev int64
	for _, val := range []string{"old", "new"} {
		ops := make([]Op, 100)
		for i := range ops {
			ops[i] = OpPut(fmt.Sprintf("k%03d", i), val)
		}
		for range 30 { // 100 keys with 60 versions each
			resp, err := s.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
	}
	before, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, rev, WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k000", WithRev(rev-1)); !errors.Is(err, ErrCompacted) {
		t.Fatalf("read below the compaction: %v, want ErrCompacted", err)
	}
	s.fsm.mu.Lock()
	pending, records := s.fsm.app.State().CompactPending(), s.fsm.app.State().Versions()
	s.fsm.mu.Unlock()
	if pending || records != 100 {
		t.Fatalf("after a physical compaction: pending %v, %d records, want done, 100", pending, records)
	}
	after, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.DBSizeInUse >= before.DBSizeInUse/10 {
		t.Fatalf("size in use %d after a physical compaction, %d before", after.DBSizeInUse, before.DBSizeInUse)
	}
}

// stepCompaction runs one step of f's pending removal, leaving its commit to the test, and
// reports whether more remains.
func stepCompaction(f *fsm) bool {
	more, _ := f.compactStep()
	return more
}
