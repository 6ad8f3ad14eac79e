package ember

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// slowLogStore delays every log append by the current delay, as a disk whose fsyncs stall.
type slowLogStore struct {
	raft.LogStore
	delay atomic.Int64 // nanoseconds
}

func (s *slowLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *slowLogStore) StoreLogs(ls []*raft.Log) error {
	time.Sleep(time.Duration(s.delay.Load()))
	return s.LogStore.StoreLogs(ls)
}

// A keepalive is answered only once its renewal is committed, so on a slow disk each answer
// comes late. The next renewal must still go out a third of the TTL after the previous one was
// sent, not after it was answered: otherwise a commit latency over two thirds of the TTL lets
// a lease whose holder never stopped renewing expire.
func TestStore_KeepAlive_SlowCommitsDoNotExpireLease(t *testing.T) {
	slow := &slowLogStore{}
	s := dfOpenSingle(t, t.TempDir(), &dfFault{}, func(c *config) error {
		c.wrapStores = func(l raft.LogStore, st raft.StableStore) (raft.LogStore, raft.StableStore) {
			slow.LogStore = l
			return slow, st
		}
		return nil
	})
	ctx := dfCtx(t, time.Minute)
	g, err := s.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := s.KeepAlive(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for range ka {
		}
	}()
	// 1.5 s per append: beyond two thirds of the 2 s TTL, within the TTL itself.
	slow.delay.Store(int64(1500 * time.Millisecond))
	select {
	case <-ended:
		ttl, err := s.TimeToLive(ctx, g.ID)
		t.Fatalf("keepalives ended under slow commits; TimeToLive: %+v, %v", ttl, err)
	case <-time.After(4 * time.Duration(g.TTL) * time.Second):
	}
	slow.delay.Store(0)
	ttl, err := s.TimeToLive(ctx, g.ID)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease kept alive throughout is gone: %+v, %v", ttl, err)
	}
}
