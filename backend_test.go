package ember

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/wire"
)

// fsmAt is a detached fsm on the backend at path, keeping no value inline.
func fsmAt(t testing.TB, path string) *fsm {
	t.Helper()
	s := &Store{core: &core{}}
	s.watch = newWatchHub(s, 0, 0)
	s.lessor = newLessor(s, hclog.NewNullLogger(), 0)
	f, err := newFSM(hclog.NewNullLogger(), s.watch, s.lessor, defaultDedupResultBytes, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.fsm = f
	return f
}

// crashLog is a raft log of every kind of command: puts of small and large values, a txn,
// deletes, lease grants, a leased put, a revoke, a compaction, a retried request ID, and
// commands without request IDs.
func crashLog() []*raft.Log {
	var cmds []*wire.Command
	for i := range 12 {
		cmds = append(cmds, putCmd(uint64(i+1), fmt.Sprintf("k%d", i%5), strings.Repeat(fmt.Sprint(i), 50*i), 0))
	}
	cmds = append(cmds,
		&wire.Command{ID: wire.RequestID{Client: 7, Seq: 100}, Kind: wire.KindLeaseGrant, LeaseID: 9, LeaseTTL: 60},
		putCmd(101, "leased", "x", 9),
		txnCmd(102, &wire.Txn{Success: []wire.Op{wirePut("t1", strings.Repeat("t", 400)), wireDel("k1", "")}}),
		&wire.Command{Kind: wire.KindCompact, Revision: 8},
		putCmd(5, "retry", "of an early ID", 0),
		&wire.Command{ID: wire.RequestID{Client: 7, Seq: 103}, Kind: wire.KindLeaseRevoke, LeaseID: 9},
		putCmd(104, "k2", strings.Repeat("z", 1000), 0),
		// Without request IDs (as a lessor's checkpoints): no dedup answers a replay of these.
		&wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{wirePut("noid", strings.Repeat("n", 200))}}},
		&wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{wirePut("noid", "again")}}},
	)
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c.Marshal(nil)}
	}
	return logs
}

// A member that crashes at any point (after any entry, with the backend committed after every
// entry, every third, or never) and restarts loads the backend's last commit and replays the
// whole log from its start, as raft does from its last snapshot: the entries the backend holds
// are skipped, the rest applied once, and the state equals that of a member that never crashed.
func TestFSM_Backend_CrashAtEveryPoint(t *testing.T) {
	logs := crashLog()
	ref := detachedMemFSM(t)
	ref.ApplyBatch(logs)
	for _, commitEvery := range []int{1, 3, 0} {
		for crashAfter := 0; crashAfter <= len(logs); crashAfter++ {
			t.Run(fmt.Sprintf("commit%d/crash%d", commitEvery, crashAfter), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), backendFile)
				f := fsmAt(t, path)
				for i, l := range logs[:crashAfter] {
					f.ApplyBatch([]*raft.Log{l})
					if commitEvery > 0 && (i+1)%commitEvery == 0 {
						if err := f.commit(); err != nil {
							t.Fatal(err)
						}
					}
				}
				// The crash: the file keeps the last commit, nothing after it.
				if err := f.app.State().Backend().Close(); err != nil {
					t.Fatal(err)
				}
				r := fsmAt(t, path)
				t.Cleanup(func() { r.close() })
				for _, l := range logs {
					r.ApplyBatch([]*raft.Log{l})
				}
				assertSameState(t, ref.app.State(), r.app.State())
				if err := r.app.Check(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
