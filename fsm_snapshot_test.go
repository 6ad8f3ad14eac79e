package ember

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// detachedFSM returns an fsm wired to a Store that runs no raft, so that tests can feed it log
// entries directly. Its watch hub has no watchers and its lessor is not leader, so applying and
// restoring touch nothing else.
func detachedFSM(t testing.TB) *fsm { return detachedFSMWithBudget(t, defaultDedupResultBytes) }

// detachedFSMWithBudget is detachedFSM holding long dedup results within budget bytes.
func detachedFSMWithBudget(t testing.TB, budget int64) *fsm {
	s := &Store{core: &core{}}
	s.watch = newWatchHub(s, 0, 0)
	s.lessor = newLessor(s, hclog.NewNullLogger(), 0)
	s.fsm = newTestFSM(t, s.watch, s.lessor, budget)
	return s.fsm
}

// detachedMemFSM is detachedFSM without a backend: its state is in memory only, and its raft
// snapshots hold the state (fsmSnapshot).
func detachedMemFSM(t testing.TB) *fsm {
	s := &Store{core: &core{}}
	s.watch = newWatchHub(s, 0, 0)
	s.lessor = newLessor(s, hclog.NewNullLogger(), 0)
	f, err := newFSM(hclog.NewNullLogger(), s.watch, s.lessor, defaultDedupResultBytes, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	s.fsm = f
	return f
}

// newTestFSM is a state machine that keeps every value only in its backend (none inline), so
// that the tests that use it cover the backend's paths whatever their values' sizes.
func newTestFSM(t testing.TB, watch *watchHub, lessor *lessor, budget int64) *fsm {
	return newTestFSMInline(t, watch, lessor, budget, 0)
}

// newTestFSMInline is newTestFSM keeping values up to inlineMax bytes in memory too.
func newTestFSMInline(t testing.TB, watch *watchHub, lessor *lessor, budget int64, inlineMax int) *fsm {
	t.Helper()
	f, err := newFSM(hclog.NewNullLogger(), watch, lessor, budget, filepath.Join(t.TempDir(), backendFile), inlineMax)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.close() })
	return f
}

// fsmDriver appends entries to a detached fsm with increasing raft indexes.
type fsmDriver struct {
	f     *fsm
	index uint64
}

func (d *fsmDriver) apply(t testing.TB, cmd *wire.Command) *wire.Result {
	t.Helper()
	d.index++
	out := d.f.ApplyBatch([]*raft.Log{{Index: d.index, Type: raft.LogCommand, Data: cmd.Marshal(nil)}})
	res, ok := out[0].(*wire.Result)
	if !ok {
		t.Fatalf("apply: %T", out[0])
	}
	return res
}

// config appends a configuration entry, which only advances the applied index.
func (d *fsmDriver) config() {
	d.index++
	d.f.ApplyBatch([]*raft.Log{{Index: d.index, Type: raft.LogConfiguration}})
}

func txnCmd(id uint64, t *wire.Txn) *wire.Command {
	return &wire.Command{ID: wire.RequestID{Client: 7, Seq: id}, Kind: wire.KindTxn, Txn: t}
}

func putCmd(id uint64, key, val string, lease int64) *wire.Command {
	op := wirePut(key, val)
	op.Lease = lease
	return txnCmd(id, &wire.Txn{Success: []wire.Op{op}})
}

// buildRichFSM gives an fsm every kind of state a snapshot carries: history with several versions
// per key, tombstones (one at exactly the compaction revision), a compaction, leases with attached
// keys, checkpoints, a revoked lease, dedup entries with txn results, and binary keys and values.
func buildRichFSM(t testing.TB) *fsmDriver { return buildRichFSMOn(t, detachedFSM(t)) }

// buildRichFSMOn is buildRichFSM on f.
func buildRichFSMOn(t testing.TB, f *fsm) *fsmDriver {
	t.Helper()
	d := &fsmDriver{f: f}
	must := func(res *wire.Result) {
		t.Helper()
		if res.Code != wire.CodeOK {
			t.Fatalf("apply: code %d", res.Code)
		}
	}
	for _, l := range []struct{ id, ttl int64 }{{10, 60}, {20, 30}, {30, 5}, {40, 100}} {
		must(d.apply(t, &wire.Command{Kind: wire.KindLeaseGrant, LeaseID: l.id, LeaseTTL: l.ttl}))
	}
	must(d.apply(t, putCmd(1, "a", "1", 10)))
	must(d.apply(t, putCmd(2, "b", "2", 10)))
	must(d.apply(t, putCmd(3, "c", "3", 20)))
	must(d.apply(t, putCmd(4, "a", "4", 0))) // detaches a from lease 10
	d.config()
	cmp := wire.Compare{Target: wire.TargetValue, Result: wire.CompareEqual, Key: []byte("a"), Value: []byte("4")}
	must(d.apply(t, txnCmd(5, &wire.Txn{
		Compares: []wire.Compare{cmp},
		Success:  wireOps(wireGet("a"), wirePut("d", "5"), wirePut("e", "6"), wireDel("b", ""), wireTxnOp(nil, wireOps(wirePut("n", "7")), nil)),
	})))
	must(d.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: d.f.app.State().Rev()})) // tombstone b at exactly compactRev
	// Finish the removal, as a Store's compactor would (a snapshot leaves out what it removes).
	for stepCompaction(d.f) {
	}
	must(d.apply(t, putCmd(6, "f", "8", 40)))
	must(d.apply(t, txnCmd(7, &wire.Txn{Success: wireOps(wireDel("e", "g"))})))
	must(d.apply(t, putCmd(8, "x\x00\xffy", "\x00\x01", 20)))
	must(d.apply(t, putCmd(9, "empty", "", 0)))
	must(d.apply(t, &wire.Command{Kind: wire.KindLeaseCheckpoint, Checkpoints: []wire.LeaseCheckpoint{
		{ID: 10, RemainingMs: 1234}, {ID: 20, RemainingMs: 999}, {ID: 99, RemainingMs: 5}}}))
	must(d.apply(t, &wire.Command{Kind: wire.KindLeaseRevoke, LeaseID: 30}))
	// A failed command is remembered too: its retry must get the same failure.
	if res := d.apply(t, putCmd(10, "g", "9", 12345)); res.Code != wire.CodeLeaseNotFound {
		t.Fatalf("put with unknown lease: code %d", res.Code)
	}
	// A retried command is answered from the dedup table and changes nothing.
	rev := d.f.app.State().Rev()
	if res := d.apply(t, putCmd(1, "a", "retry", 10)); res.Code != wire.CodeOK || d.f.app.State().Rev() != rev {
		t.Fatalf("retried put applied again: rev %d -> %d", rev, d.f.app.State().Rev())
	}
	must(d.apply(t, putCmd(11, "h", "10", 0)))
	return d
}

// assertSameState compares two states through what internal/mvcc exports: their counters, the
// hash at the current revision, and their snapshot encodings, which hold every version, lease and
// dedup entry (internal/mvcc's TestSnapshot_RoundTrip shows a decode gives back the same trees).
func assertSameState(t testing.TB, want, got *mvcc.State) {
	t.Helper()
	type counters struct {
		Rev, CompactRev, Size            int64
		Keys, Versions, Leases, Requests int
		Hash                             uint32
	}
	of := func(st *mvcc.State) counters {
		return counters{st.Rev(), st.CompactRev(), st.Size(), st.Keys(), st.Versions(), st.LeaseCount(), st.RememberedCount(), mustHash(t, st, st.Rev())}
	}
	if w, g := of(want), of(got); g != w {
		t.Fatalf("state %+v, want %+v", g, w)
	}
	if w, g := encodeSnapshot(t, want, 0), encodeSnapshot(t, got, 0); !bytes.Equal(g, w) {
		t.Fatalf("snapshot of %d bytes, want the %d bytes of the expected state", len(g), len(w))
	}
}

func encodeSnapshot(t testing.TB, st *mvcc.State, applied uint64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := mvcc.WriteSnapshot(&buf, st, applied); err != nil {
		t.Fatalf("writeSnapshot: %v", err)
	}
	return buf.Bytes()
}

// TestSnapshot_RoundTrip_FSMStates writes states the fsm built and reads them back: every kind
// of state a snapshot carries, and a dedup table trimmed to its budget. The decoded state must
// be the same and consistent, and writing it again must give the same bytes. internal/mvcc's
// TestSnapshot_RoundTrip covers states of other shapes tree by tree.
func TestSnapshot_RoundTrip_FSMStates(t *testing.T) {
	tests := []struct {
		name  string
		build func(t testing.TB) (*mvcc.State, uint64)
	}{
		{name: "rich fsm state", build: func(t testing.TB) (*mvcc.State, uint64) {
			d := buildRichFSM(t)
			return d.f.app.State(), d.f.applied.Load()
		}},
		{name: "trimmed dedup table", build: func(t testing.TB) (*mvcc.State, uint64) {
			d := trimmedDedupFSM(t)
			return d.f.app.State(), d.f.applied.Load()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, applied := tc.build(t)
			data := encodeSnapshot(t, st, applied)
			got, gotApplied, err := mvcc.ReadSnapshot(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("readSnapshot: %v", err)
			}
			if gotApplied != applied {
				t.Fatalf("applied %d, want %d", gotApplied, applied)
			}
			assertSameState(t, st, got)
			if err := got.Check(); err != nil {
				t.Fatal(err)
			}
			if again := encodeSnapshot(t, got, gotApplied); !bytes.Equal(again, data) {
				t.Fatalf("re-encoding the decoded state gives %d different bytes", len(again))
			}
		})
	}
}

// memSink is an in-memory raft.SnapshotSink; failAfter > 0 makes writes past that many bytes fail.
type memSink struct {
	buf       bytes.Buffer
	failAfter int
	closed    bool
	cancelled bool
}

func (m *memSink) Write(p []byte) (int, error) {
	if m.failAfter > 0 && m.buf.Len()+len(p) > m.failAfter {
		return 0, errors.New("memSink: disk full")
	}
	return m.buf.Write(p)
}
func (m *memSink) Close() error  { m.closed = true; return nil }
func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// TestSnapshot_FSMRestore goes through the raft interfaces: fsm.Snapshot, Persist into a sink,
// fsm.Restore on a fresh fsm. The restored fsm must hold the same state, applied index, dedup
// order and lease clocks, must keep answering retries from the dedup table, and must evolve
// exactly like the original.
func TestSnapshot_FSMRestore(t *testing.T) {
	d := buildRichFSMOn(t, detachedMemFSM(t))
	snap, err := d.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot was taken must not leak into it.
	want := d.f.app.State().Clone()
	wantApplied := d.f.applied.Load()
	d.apply(t, putCmd(100, "late", "x", 0))

	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed %v cancelled %v, want closed only", sink.closed, sink.cancelled)
	}

	r := &fsmDriver{f: detachedMemFSM(t)}
	r.apply(t, putCmd(500, "old", "state", 0)) // replaced wholesale by the restore
	if err := r.f.Restore(io.NopCloser(bytes.NewReader(sink.buf.Bytes()))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	assertSameState(t, want, r.f.app.State())
	if err := r.f.app.State().Check(); err != nil {
		t.Fatal(err)
	}
	if got := r.f.applied.Load(); got != wantApplied {
		t.Fatalf("applied %d, want %d", got, wantApplied)
	}
	if err := r.f.app.Check(); err != nil { // the dedup expiry order rebuilt from the table
		t.Fatal(err)
	}
	if v := r.f.view(); v.st.Rev() != want.Rev() || v.applied != wantApplied {
		t.Fatalf("read view at rev %d applied %d after restore", v.st.Rev(), v.applied)
	}
	// Lease clocks restart from the checkpointed remaining TTL, or the full TTL.
	lessor := r.f.lessor
	lessor.mu.Lock()
	clocks := map[int64]time.Duration{}
	for id, lc := range lessor.known {
		clocks[id] = lc.remaining
	}
	lessor.mu.Unlock()
	wantClocks := map[int64]time.Duration{10: 1234 * time.Millisecond, 20: 999 * time.Millisecond, 40: 100 * time.Second}
	if fmt.Sprint(clocks) != fmt.Sprint(wantClocks) {
		t.Fatalf("lease clocks %v, want %v", clocks, wantClocks)
	}

	// Continue from the snapshot point on r (which held other state before) and on a fresh fsm:
	// retries are answered from the dedup table, and new commands apply alike on both.
	r.index = wantApplied
	fresh := &fsmDriver{f: detachedFSM(t)}
	if err := fresh.f.Restore(io.NopCloser(bytes.NewReader(sink.buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	fresh.index = wantApplied
	for _, dr := range []*fsmDriver{r, fresh} {
		res := dr.apply(t, putCmd(2, "b", "retry", 10))
		if res.Code != wire.CodeOK || dr.f.app.State().Rev() != want.Rev() {
			t.Fatalf("retry after restore: code %d rev %d, want the remembered answer at %d", res.Code, dr.f.app.State().Rev(), want.Rev())
		}
		if res := dr.apply(t, putCmd(10, "g", "9", 0)); res.Code != wire.CodeLeaseNotFound {
			t.Fatalf("retry of a failed command after restore: code %d, want the remembered failure", res.Code)
		}
		dr.apply(t, putCmd(200, "new", "1", 40))
		dr.apply(t, &wire.Command{Kind: wire.KindLeaseRevoke, LeaseID: 20})
	}
	assertSameState(t, fresh.f.app.State(), r.f.app.State())
	if ks := r.f.app.State().LeaseKeys(40); fmt.Sprint(ks) != "[new]" {
		t.Fatalf("lease 40 keys %v after restore and put", ks)
	}
}

// TestSnapshot_PersistFailure checks that a sink that fails makes Persist fail and cancel it.
func TestSnapshot_PersistFailure(t *testing.T) {
	d := buildRichFSMOn(t, detachedMemFSM(t))
	snap, err := d.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{failAfter: 16}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist into a failing sink succeeded")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("sink cancelled %v closed %v, want cancelled only", sink.cancelled, sink.closed)
	}
}

// smallSnapshot has every frame type and stays small enough to damage at every position.
func smallSnapshot(t testing.TB) []byte {
	t.Helper()
	d := &fsmDriver{f: detachedFSM(t)}
	d.apply(t, &wire.Command{Kind: wire.KindLeaseGrant, LeaseID: 3, LeaseTTL: 9})
	d.apply(t, putCmd(1, "a", "x", 3))
	d.apply(t, putCmd(2, "b", "y", 0))
	d.apply(t, txnCmd(3, &wire.Txn{Success: wireOps(wireDel("b", ""), wireGet("a"))}))
	return encodeSnapshot(t, d.f.app.State(), d.f.applied.Load())
}

// TestSnapshot_RestoreCorruptKeepsState checks that fsm.Restore refuses a damaged snapshot and
// leaves the current state in place (never half-loaded).
func TestSnapshot_RestoreCorruptKeepsState(t *testing.T) {
	d := buildRichFSM(t)
	want := d.f.app.State().Clone()
	applied := d.f.applied.Load()
	data := smallSnapshot(t)
	damaged := data[:len(data)-3]
	if err := d.f.Restore(io.NopCloser(bytes.NewReader(damaged))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Restore: %v, want ErrCorrupt", err)
	}
	assertSameState(t, want, d.f.app.State())
	if d.f.applied.Load() != applied {
		t.Fatalf("applied index moved to %d", d.f.applied.Load())
	}
}

// mustHash is st.Hash(rev); st must be the fsm's own state or a pinned clone.
func mustHash(t testing.TB, st *mvcc.State, rev int64) uint32 {
	t.Helper()
	h, err := st.Hash(rev)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// snapshotStream is what raft sends a lagging member from f: its snapshot as Persist writes it,
// or, for a marker (a member with a backend), the backend stream snapshotStore.Open sends.
func snapshotStream(t testing.TB, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(sink.buf.Bytes(), []byte(markerMagic)) {
		return sink.buf.Bytes()
	}
	size, rc, err := f.streamBackend()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil || int64(len(data)) != size {
		t.Fatalf("backend stream: %d of %d bytes, %v", len(data), size, err)
	}
	return data
}

// With a backend, a raft snapshot is a marker and a lagging member is sent the backend as it is
// when sent (snapshotStore.Open): writes after the snapshot are in it, and the receiver, whose
// raft goes on from the snapshot's index, skips the entries its restored state already holds.
// Restored on a member with a backend and on one without, the state equals the sender's.
func TestSnapshot_BackendStreamRestore(t *testing.T) {
	d := buildRichFSM(t)
	snap, err := d.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	snapIndex := d.f.applied.Load()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if got, want := sink.buf.Len(), len(markerMagic)+8; got != want || !bytes.HasPrefix(sink.buf.Bytes(), []byte(markerMagic)) {
		t.Fatalf("raft snapshot of %d bytes, want a %d-byte marker", got, want)
	}
	late := d.apply(t, putCmd(100, "late", strings.Repeat("x", 300), 0))
	data := snapshotStream(t, d.f)
	want := d.f.app.State()
	for name, r := range map[string]*fsmDriver{"backend": {f: detachedFSM(t)}, "memory": {f: detachedMemFSM(t)}} {
		t.Run(name, func(t *testing.T) {
			r.apply(t, putCmd(500, "old", "state", 0)) // replaced wholesale by the restore
			if err := r.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			assertSameState(t, want, r.f.app.State())
			if err := r.f.app.Check(); err != nil {
				t.Fatal(err)
			}
			// Raft replays from the snapshot's index: the late put is skipped, not applied
			// twice.
			out := r.f.ApplyBatch([]*raft.Log{{Index: snapIndex + 1, Type: raft.LogCommand, Data: putCmd(100, "late", "again", 0).Marshal(nil)}})
			if out[0] != nil || r.f.app.State().Rev() != late.Revision {
				t.Fatalf("replayed entry applied: %v, revision %d, want %d", out[0], r.f.app.State().Rev(), late.Revision)
			}
		})
	}
}
