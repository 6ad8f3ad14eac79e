package ember

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/wire"
)

// testHost is a member without raft or a Store, for a watch hub or a lessor under test: its read
// views come from an fsm of its own, and its own commands (a lessor's revokes and checkpoints)
// are applied to that fsm at once, as a single member's log would commit them.
type testHost struct {
	fsm    *fsm
	ctx    context.Context
	leader bool // what IsLeader answers; set before the lessor runs

	applyMu sync.Mutex // serializes apply, as raft's one apply goroutine does
	index   uint64     // raft index of the last entry applied through apply; guarded by applyMu

	mu      sync.Mutex // guards the fields below
	seq     uint64
	closing bool
	wg      sync.WaitGroup
}

// newTestHost returns a host whose hub and lessor are wired to its fsm; the hub's dispatcher and
// the lessor's loop do not run until the test spawns them. Everything it spawned has ended
// when the test's cleanup is done.
func newTestHost(t testing.TB, limits hubLimits) *testHost {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &testHost{ctx: ctx}
	hub := newWatchHub(h, defaultProgressInterval, time.Second)
	hub.limits = limits
	// In memory: the hub's tests race writes against the dispatcher, and a backend's reads
	// would slow the writes down (the backend's own tests are elsewhere).
	fsm, err := newFSM(hclog.NewNullLogger(), hub, newLessor(h, hclog.NewNullLogger(), time.Second), defaultDedupResultBytes, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	h.fsm = fsm
	t.Cleanup(func() {
		h.mu.Lock()
		h.closing = true
		h.mu.Unlock()
		cancel()
		h.wg.Wait()
	})
	return h
}

func (h *testHost) header(rev int64) ResponseHeader {
	return ResponseHeader{Revision: rev, MemberID: "test-host"}
}

func (h *testHost) view() *readView { return h.fsm.view() }

func (h *testHost) spawn(fn func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		fn()
	}()
	return true
}

func (h *testHost) lifetime() context.Context { return h.ctx }

func (h *testHost) IsLeader() bool { return h.leader }

func (h *testHost) knowsLeader() bool { return true }

func (h *testHost) linearizableView(ctx context.Context) (*readView, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return h.fsm.view(), nil
}

func (h *testHost) nextID() wire.RequestID {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	return wire.RequestID{Client: 99, Seq: h.seq}
}

func (h *testHost) submitOwn(ctx context.Context, cmd *wire.Command, data []byte, _ bool) (*wire.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := h.apply(data)
	if res.Code != wire.CodeOK {
		return nil, codeError(res.Code)
	}
	return res, nil
}

// apply appends one encoded command to the host's log and applies it.
func (h *testHost) apply(data []byte) *wire.Result {
	h.applyMu.Lock()
	defer h.applyMu.Unlock()
	h.index++
	return h.fsm.ApplyBatch([]*raft.Log{{Index: h.index, Type: raft.LogCommand, Data: data}})[0].(*wire.Result)
}
