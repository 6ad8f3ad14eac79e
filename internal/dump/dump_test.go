package dump

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/wire"
	bolt "go.etcd.io/bbolt"
)

// dumpFixture is a stopped member's data dir and what the member showed before it stopped.
type dumpFixture struct {
	dir string
	id  string

	snapIndex uint64 // index of the raft snapshot taken half-way
	lease     ember.LeaseID
	binValue  string

	latest     *ember.GetResponse // every key at the end
	oldRev     int64              // a revision after the compaction, before the last writes
	atOldRev   *ember.GetResponse // every key at oldRev
	compactRev int64
}

// newDumpFixture writes history on both sides of a raft snapshot, so that a dump must combine
// the snapshot with the log entries after it: a key created before the snapshot and changed
// after, a key deleted after, a lease revoked after, a transaction, a compaction.
func newDumpFixture(t *testing.T, opts ...ember.Option) *dumpFixture {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The first half runs with a snapshot after every entry, the second on the defaults, so
	// that the newest snapshot is the one taken half-way.
	s := openFixtureStore(ctx, t, dir, append(opts, ember.WithSnapshotThreshold(1), ember.WithSnapshotInterval(20*time.Millisecond), ember.WithSnapshotRetain(1))...)
	fx := &dumpFixture{dir: dir, id: s.ID(), binValue: "\x00\xffbin"}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	must(s.Put(ctx, "a", "1"))
	must(s.Put(ctx, "b", "2"))
	must(s.Put(ctx, "a", "1b"))
	g, err := s.Grant(ctx, 600)
	must(g, err)
	fx.lease = g.ID
	must(s.Put(ctx, "leased", "x", ember.WithLease(fx.lease)))
	must(s.Put(ctx, "key with space", "v=1"))
	must(s.Txn(ctx).If(ember.Compare(ember.Version("a"), "=", 2)).
		Then(ember.OpPut("c", fx.binValue)).Else(ember.OpGet("a")).Commit())
	keep, err := s.Grant(ctx, 600)
	must(keep, err)
	must(s.Put(ctx, "m", "kept", ember.WithLease(keep.ID)))

	fx.snapIndex = waitSnapshotOfAll(ctx, t, s, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openFixtureStore(ctx, t, dir, opts...)

	must(s.Put(ctx, "a", "after"))
	must(s.Delete(ctx, "b"))
	must(s.Revoke(ctx, fx.lease))
	r, err := s.Put(ctx, "d", "4")
	must(r, err)
	fx.compactRev = r.Header.Revision
	must(s.Compact(ctx, fx.compactRev))
	fx.oldRev = fx.compactRev
	if fx.atOldRev, err = s.Get(ctx, "", ember.WithPrefix(), ember.WithRev(fx.oldRev)); err != nil {
		t.Fatal(err)
	}
	must(s.Put(ctx, "e", "5"))
	must(s.Put(ctx, "d", "4b"))
	if fx.latest, err = s.Get(ctx, "", ember.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return fx
}

// openFixtureStore opens the fixture's member on dir and waits until it is ready; the test
// closes it.
func openFixtureStore(ctx context.Context, t *testing.T, dir string, opts ...ember.Option) *ember.Store {
	t.Helper()
	s, err := ember.Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitSnapshotOfAll waits until a raft snapshot in dir covers every entry of s's log, and
// returns its index.
func waitSnapshotOfAll(ctx context.Context, t *testing.T, s *ember.Store, dir string) uint64 {
	t.Helper()
	for {
		st, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		metas, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "meta.json"))
		for _, m := range metas {
			var meta struct{ Index uint64 }
			if b, err := os.ReadFile(m); err == nil && json.Unmarshal(b, &meta) == nil && meta.Index == st.RaftIndex {
				return meta.Index
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no snapshot of index %d in %s: %v", st.RaftIndex, dir, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dumpJSON is the JSON document Dump writes.
type dumpJSON struct {
	Warnings  []string       `json:"warnings"`
	Snapshots []dumpSnapshot `json:"snapshots"`
	Entries   []dumpEntry    `json:"entries"`
	Keys      *dumpKeys      `json:"keys"`
}

func runDump(t *testing.T, dir string, opts Options) string {
	t.Helper()
	var out bytes.Buffer
	if err := Run(&out, dir, opts); err != nil {
		t.Fatalf("Run(%+v): %v", opts, err)
	}
	return out.String()
}

func runDumpJSON(t *testing.T, dir string, opts Options) *dumpJSON {
	t.Helper()
	opts.Format = "json"
	out := runDump(t, dir, opts)
	var doc dumpJSON
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("Dump JSON does not decode: %v\n%s", err, out)
	}
	if dec.More() {
		t.Fatalf("Dump JSON has data after the document:\n%s", out)
	}
	return &doc
}

// dumpWantKeys converts what the live member answered into the shape Dump prints.
func dumpWantKeys(resp *ember.GetResponse) []dumpKV {
	var kvs []dumpKV
	for _, kv := range resp.Kvs {
		kvs = append(kvs, dumpKV{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision,
			Version: kv.Version, Value: kv.Value, Lease: kv.Lease})
	}
	return kvs
}

func TestDumpJSON(t *testing.T) {
	for _, ls := range []ember.LogStore{ember.LogStoreBolt, ember.LogStoreWAL} {
		t.Run(ls.String(), func(t *testing.T) { testDumpJSON(t, newDumpFixture(t, ember.WithLogStore(ls))) })
	}
}

func testDumpJSON(t *testing.T, fx *dumpFixture) {
	doc := runDumpJSON(t, fx.dir, Options{})

	if len(doc.Warnings) != 0 {
		t.Errorf("warnings on a healthy dir: %q", doc.Warnings)
	}
	if len(doc.Snapshots) != 1 {
		t.Fatalf("snapshots = %+v, want 1", doc.Snapshots)
	}
	snap := doc.Snapshots[0]
	if snap.Index != fx.snapIndex || snap.Term == 0 || snap.Size <= 0 ||
		!reflect.DeepEqual(snap.Members, []dumpMember{{ID: fx.id, Address: snap.Members[0].Address, Suffrage: "Voter"}}) {
		t.Errorf("snapshot = %+v, want index %d and member %s as the only voter", snap, fx.snapIndex, fx.id)
	}

	// Every entry of the log, in order, from the bootstrap configuration on.
	if len(doc.Entries) == 0 || doc.Entries[0].Index != 1 || doc.Entries[0].Type != "LogConfiguration" ||
		len(doc.Entries[0].Members) != 1 || doc.Entries[0].Members[0].ID != fx.id {
		t.Fatalf("first entry = %+v, want the bootstrap configuration", doc.Entries[:min(1, len(doc.Entries))])
	}
	for i, e := range doc.Entries {
		if e.Index != uint64(i+1) {
			t.Fatalf("entry %d has index %d: entries missing or out of order", i, e.Index)
		}
		if e.Error != "" {
			t.Errorf("entry %d: %s", e.Index, e.Error)
		}
	}
	byKind := map[string][]*dumpCommand{}
	for _, e := range doc.Entries {
		if e.Command != nil {
			byKind[e.Command.Kind] = append(byKind[e.Command.Kind], e.Command)
		}
	}
	if len(byKind["leader-start"]) == 0 || byKind["leader-start"][0].Node != fx.id {
		t.Errorf("leader-start entries = %+v", byKind["leader-start"])
	}
	if grants := byKind["lease-grant"]; len(grants) != 2 || grants[0].Lease != int64(fx.lease) || grants[0].TTL != 600 {
		t.Errorf("lease-grant entries = %+v, want 2, the first for lease %d with TTL 600", grants, fx.lease)
	}
	if revokes := byKind["lease-revoke"]; len(revokes) != 1 || revokes[0].Lease != int64(fx.lease) {
		t.Errorf("lease-revoke entries = %+v", revokes)
	}
	if compacts := byKind["compact"]; len(compacts) != 1 || compacts[0].Revision != fx.compactRev {
		t.Errorf("compact entries = %+v, want revision %d", compacts, fx.compactRev)
	}
	txns := byKind["txn"]
	if len(txns) != 12 {
		t.Fatalf("%d txn entries, want 12 (puts, a delete, a txn)", len(txns))
	}
	for _, c := range txns {
		if c.RequestID == "" {
			t.Errorf("txn without a request ID: %+v", c)
		}
	}
	if got, want := txns[0].Txn, (&dumpTxn{Success: []dumpOp{{Type: "put", Key: []byte("a"), Value: []byte("1")}}}); !reflect.DeepEqual(got, want) {
		t.Errorf("first put = %+v, want %+v", got, want)
	}
	two := int64(2)
	wantTxn := &dumpTxn{
		Compare: []dumpCompare{{Target: "VERSION", Result: "EQUAL", Key: []byte("a"), Version: &two}},
		Success: []dumpOp{{Type: "put", Key: []byte("c"), Value: []byte(fx.binValue)}},
		Failure: []dumpOp{{Type: "range", Key: []byte("a")}},
	}
	if got := txns[5].Txn; !reflect.DeepEqual(got, wantTxn) {
		t.Errorf("txn = %s, want %s", dumpJSONString(got), dumpJSONString(wantTxn))
	}
	if got := txns[8].Txn.Success[0]; got.Type != "delete" || string(got.Key) != "b" {
		t.Errorf("delete = %+v", got)
	}

	// The keys are what the member served before it stopped: the snapshot plus the log after it.
	if doc.Keys == nil {
		t.Fatal("no keys")
	}
	if got, want := doc.Keys.Kvs, dumpWantKeys(fx.latest); !reflect.DeepEqual(got, want) {
		t.Errorf("keys:\n got %s\nwant %s", dumpJSONString(got), dumpJSONString(want))
	}
	if h := doc.Keys.Header; h.Revision != fx.latest.Header.Revision || h.MemberID != fx.id || h.RaftTerm == 0 {
		t.Errorf("header = %+v, want revision %d, member %s", h, fx.latest.Header.Revision, fx.id)
	}
	if doc.Keys.Count != int64(len(fx.latest.Kvs)) {
		t.Errorf("count = %d, want %d", doc.Keys.Count, len(fx.latest.Kvs))
	}
}

func dumpJSONString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestDumpKeysEtcdShape checks the keys document against `etcdctl get -w json` field by field.
func TestDumpKeysEtcdShape(t *testing.T) {
	fx := newDumpFixture(t)
	out := runDump(t, fx.dir, Options{Format: "json", Keys: true, Prefix: "m"})
	var doc map[string]map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber() // lease IDs do not fit a float64
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if len(doc) != 1 || doc["keys"] == nil {
		t.Fatalf("with Keys only, the document has fields %v, want keys only", dumpMapKeys(doc))
	}
	got := dumpJSONString(doc["keys"]["kvs"])
	m := fx.latest.Kvs[len(fx.latest.Kvs)-1]
	want := dumpJSONString([]map[string]any{{"key": "bQ==", "value": "a2VwdA==", "create_revision": m.CreateRevision,
		"mod_revision": m.ModRevision, "version": 1, "lease": m.Lease}})
	if got != want {
		t.Errorf("kvs = %s, want %s", got, want)
	}
	if doc["keys"]["count"] != json.Number("1") {
		t.Errorf("count = %v", doc["keys"]["count"])
	}
}

func dumpMapKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestDumpKeysAtRevisionAndPrefix(t *testing.T) {
	fx := newDumpFixture(t)
	doc := runDumpJSON(t, fx.dir, Options{Keys: true, Revision: fx.oldRev})
	if doc.Snapshots != nil || doc.Entries != nil {
		t.Errorf("Keys alone printed snapshots or entries: %+v", doc)
	}
	if got, want := doc.Keys.Kvs, dumpWantKeys(fx.atOldRev); !reflect.DeepEqual(got, want) {
		t.Errorf("keys at %d:\n got %s\nwant %s", fx.oldRev, dumpJSONString(got), dumpJSONString(want))
	}
	if doc.Keys.Header.Revision != fx.latest.Header.Revision {
		t.Errorf("header revision %d, want the store's %d, as etcd", doc.Keys.Header.Revision, fx.latest.Header.Revision)
	}

	doc = runDumpJSON(t, fx.dir, Options{Keys: true, Prefix: "a"})
	if len(doc.Keys.Kvs) != 1 || string(doc.Keys.Kvs[0].Key) != "a" || string(doc.Keys.Kvs[0].Value) != "after" {
		t.Errorf("prefix a: %s", dumpJSONString(doc.Keys.Kvs))
	}
	doc = runDumpJSON(t, fx.dir, Options{Keys: true, Prefix: "zz"})
	if doc.Keys.Kvs != nil || doc.Keys.Count != 0 {
		t.Errorf("prefix zz: %s", dumpJSONString(doc.Keys))
	}

	var out bytes.Buffer
	if err := Run(&out, fx.dir, Options{Keys: true, Revision: fx.compactRev - 1}); !errors.Is(err, ember.ErrCompacted) {
		t.Errorf("keys at a compacted revision: %v, want ember.ErrCompacted", err)
	}
	if err := Run(&out, fx.dir, Options{Keys: true, Revision: fx.latest.Header.Revision + 1}); !errors.Is(err, ember.ErrFutureRev) {
		t.Errorf("keys at a future revision: %v, want ember.ErrFutureRev", err)
	}
}

func TestDumpLogRange(t *testing.T) {
	fx := newDumpFixture(t)
	doc := runDumpJSON(t, fx.dir, Options{Logs: true, From: 3, To: 5})
	if doc.Keys != nil || doc.Snapshots != nil {
		t.Errorf("Logs alone printed keys or snapshots")
	}
	var got []uint64
	for _, e := range doc.Entries {
		got = append(got, e.Index)
	}
	if !reflect.DeepEqual(got, []uint64{3, 4, 5}) {
		t.Errorf("entries %v, want 3..5", got)
	}
	doc = runDumpJSON(t, fx.dir, Options{Logs: true, From: 1 << 40})
	if doc.Entries == nil || len(doc.Entries) != 0 {
		t.Errorf("entries past the end = %v, want an empty list", doc.Entries)
	}
	var out bytes.Buffer
	if err := Run(&out, fx.dir, Options{Logs: true, From: 5, To: 3}); err == nil {
		t.Error("From > To accepted")
	}
}

func TestDumpSnapshotOnly(t *testing.T) {
	fx := newDumpFixture(t)
	doc := runDumpJSON(t, fx.dir, Options{Snapshot: true})
	if doc.Entries != nil || doc.Keys != nil || len(doc.Snapshots) != 1 {
		t.Errorf("Snapshot alone: %s", dumpJSONString(doc))
	}
	text := runDump(t, fx.dir, Options{Snapshot: true})
	if !strings.HasPrefix(text, "snapshots (1, newest first):\n  id=") ||
		!strings.Contains(text, " members=["+fx.id+"@") || !strings.Contains(text, "(Voter)]") {
		t.Errorf("text:\n%s", text)
	}
}

func TestDumpText(t *testing.T) {
	fx := newDumpFixture(t)
	text := runDump(t, fx.dir, Options{})
	for _, want := range []string{
		"snapshots (1, newest first):\n",
		"log entries 1..",
		"  index=1 term=1 type=LogConfiguration members=[" + fx.id + "@",
		" type=LogCommand kind=leader-start term=",
		" kind=txn id=",
		" put a=1\n",
		` if [version(a) = 2] then [put c="\x00\xffbin"] else [range a]` + "\n",
		" delete b\n",
		`keys with prefix "" at revision `,
		"  a=after create_revision=2 mod_revision=",
		`  "key with space"="v=1" create_revision=`,
		`  c="\x00\xffbin" create_revision=`,
		"count=6\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text dump lacks %q:\n%s", want, text)
		}
	}
	for _, re := range []string{
		`(?m)^  index=\d+ term=\d+ type=LogCommand kind=lease-revoke id=[0-9a-f]+-\d+ lease=` + strconv.FormatInt(int64(fx.lease), 10) + `$`,
		`(?m)^  index=\d+ term=\d+ type=LogCommand kind=compact id=[0-9a-f]+-\d+ revision=` + strconv.FormatInt(fx.compactRev, 10) + `$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("text dump has no line matching %s:\n%s", re, text)
		}
	}
	if strings.Contains(text, "  leased=x create_revision=") {
		t.Errorf("a key deleted by a lease revoke after the snapshot is listed:\n%s", text)
	}
}

func TestDumpDirInUse(t *testing.T) {
	for _, ls := range []ember.LogStore{ember.LogStoreBolt, ember.LogStoreWAL} {
		t.Run(ls.String(), func(t *testing.T) {
			dir := t.TempDir()
			s, err := ember.Open(dir, ember.WithLogStore(ls))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			start := time.Now()
			err = Run(&bytes.Buffer{}, dir, Options{})
			if err == nil || !regexp.MustCompile(`data dir .* in use`).MatchString(err.Error()) {
				t.Fatalf("Dump of a running member's dir: %v, want an in-use error", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("the in-use error took %v", d)
			}
		})
	}
}

func TestDumpNotADataDir(t *testing.T) {
	dir := t.TempDir()
	err := Run(&bytes.Buffer{}, dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "not an ember data dir") {
		t.Fatalf("Dump of an empty dir: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Dump of an empty dir created %v", entries)
	}
	if err := Run(&bytes.Buffer{}, dir, Options{Format: "yaml"}); err == nil {
		t.Error("unknown format accepted")
	}
}

// dumpSnapshotFiles returns the state and metadata files of the only snapshot in dir.
func dumpSnapshotFiles(t *testing.T, dir string) (state, meta string) {
	t.Helper()
	metas, err := filepath.Glob(filepath.Join(dir, "snapshots", "*", "meta.json"))
	if err != nil || len(metas) != 1 {
		t.Fatalf("snapshot metadata files %v, %v", metas, err)
	}
	return filepath.Join(filepath.Dir(metas[0]), "state.bin"), metas[0]
}

func TestDumpCorruptSnapshot(t *testing.T) {
	t.Run("marker damaged, state in the backend", func(t *testing.T) {
		// A member's raft snapshot only marks the index its backend was committed at; the
		// state is read from the backend, so damage to the marker does not change the dump.
		fx := newDumpFixture(t)
		want := runDump(t, fx.dir, Options{Keys: true})
		state, _ := dumpSnapshotFiles(t, fx.dir)
		dumpFlipByte(t, state, 3)
		if got := runDump(t, fx.dir, Options{Keys: true}); got != want {
			t.Fatalf("dump with a damaged marker:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("backend damaged", func(t *testing.T) {
		// A version whose bytes no longer match their checksum: refused, never dumped.
		fx := newDumpFixture(t)
		db, err := bolt.Open(filepath.Join(fx.dir, "state.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("revs"))
			k, v := b.Cursor().Last()
			v = append([]byte(nil), v...)
			v[len(v)/2] ^= 0xff
			return b.Put(k, v)
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		err = Run(&bytes.Buffer{}, fx.dir, Options{Keys: true})
		if !errors.Is(err, ember.ErrCorrupt) || !strings.Contains(err.Error(), "checksum mismatch") {
			t.Fatalf("Dump with a damaged backend: %v, want ember.ErrCorrupt from its checksum", err)
		}
		// Metadata and entries need no state.
		runDump(t, fx.dir, Options{Snapshot: true, Logs: true})
	})
	t.Run("unreadable metadata", func(t *testing.T) {
		fx := newDumpFixture(t)
		_, meta := dumpSnapshotFiles(t, fx.dir)
		if err := os.WriteFile(meta, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		doc := runDumpJSON(t, fx.dir, Options{Snapshot: true})
		if len(doc.Snapshots) != 0 || len(doc.Warnings) != 1 || !strings.Contains(doc.Warnings[0], "failed to read metadata") {
			t.Fatalf("snapshots %+v, warnings %q: want the skipped snapshot reported", doc.Snapshots, doc.Warnings)
		}
	})
}

func dumpFlipByte(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDumpRestoredDir dumps a dir made by Restore: a snapshot and an empty log.
func TestDumpRestoredDir(t *testing.T) {
	fx := newDumpFixture(t)
	s, err := ember.Open(fx.dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var backup bytes.Buffer
	// After a restart the log after the raft snapshot is applied only once the member leads.
	err = s.WaitReady(ctx)
	if err == nil {
		err = s.Snapshot(ctx, &backup)
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if err := ember.Restore(&backup, dir); err != nil {
		t.Fatal(err)
	}
	doc := runDumpJSON(t, dir, Options{})
	if len(doc.Snapshots) != 1 || doc.Entries == nil || len(doc.Entries) != 0 {
		t.Errorf("snapshots %s, entries %s: want one snapshot and an empty log", dumpJSONString(doc.Snapshots), dumpJSONString(doc.Entries))
	}
	if got, want := doc.Keys.Kvs, dumpWantKeys(fx.latest); !reflect.DeepEqual(got, want) {
		t.Errorf("keys:\n got %s\nwant %s", dumpJSONString(got), dumpJSONString(want))
	}
	if text := runDump(t, dir, Options{Logs: true}); text != "log entries: none\n" {
		t.Errorf("text log of a restored dir: %q", text)
	}
}

// An alarm entry is shown with its action, type and member, in etcd's names.
func TestDumpAlarmCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd  wire.Command
		want string
	}{
		{wire.Command{Kind: wire.KindAlarm, AlarmAction: wire.AlarmActivate, AlarmType: wire.AlarmNoSpace, NodeID: "m1"},
			" kind=alarm action=ACTIVATE alarm=NOSPACE node=m1"},
		{wire.Command{Kind: wire.KindAlarm, AlarmAction: wire.AlarmDeactivate, AlarmType: wire.AlarmCorrupt, NodeID: "m2"},
			" kind=alarm action=DEACTIVATE alarm=CORRUPT node=m2"},
	} {
		var b strings.Builder
		commandText(&b, describeCommand(&tc.cmd))
		if b.String() != tc.want {
			t.Errorf("%+v: %q, want %q", tc.cmd, b.String(), tc.want)
		}
	}
}
