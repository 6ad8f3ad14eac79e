package ember

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"time"
	"unsafe"
	"weak"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/wire"
)

// leaderChangesBuffer is how many changes a LeaderChanges channel holds for a subscriber that
// does not read; beyond it the oldest are dropped.
const leaderChangesBuffer = 16

// leaderSubs are the LeaderChanges subscriptions. The API has no way to unsubscribe, and a
// host that calls LeaderChanges and drops the channel must not leave a subscription behind for
// the life of the store. So the store holds each channel only weakly: once the host holds it no
// more (no goroutine can ever receive from it), the garbage collector frees it and the next
// sweep drops the subscription. Nobody can observe the drop, since nobody can read the channel.
type leaderSubs struct {
	// mu guards the fields below; publish holds it across its non-blocking sends. A leaf lock:
	// only raft's state getters (in subscribe's first) run under it.
	mu     sync.Mutex
	subs   []weak.Pointer[chanObject]
	kept   int  // len(subs) after the last sweep
	closed bool // Close ran: the channels are closed and no new subscription is kept
}

// minLeaderSubsSweep is the smallest number of subscriptions worth sweeping for when subscribing.
const minLeaderSubsSweep = 64

// chanObject stands for the runtime object a channel value points to: a channel value is a
// pointer to it (reflect.Value.UnsafePointer returns that pointer), and a weak pointer to it
// says whether anyone still holds the channel.
type chanObject struct{}

func weakChan(ch chan LeaderChange) weak.Pointer[chanObject] {
	return weak.Make((*chanObject)(reflect.ValueOf(ch).UnsafePointer()))
}

// strongChan returns the channel p points to, or nil once it has been collected.
func strongChan(p weak.Pointer[chanObject]) chan LeaderChange {
	obj := p.Value()
	if obj == nil {
		return nil
	}
	return *(*chan LeaderChange)(unsafe.Pointer(&obj))
}

// subscribe returns a new subscription's channel holding first(), taken under the lock so that
// no change published meanwhile is older than it; the channel is closed at once after close.
// Every time the subscriptions have doubled since the last sweep it sweeps, so they stay within
// twice the live ones (or minLeaderSubsSweep) even with no leader change to sweep them.
func (ls *leaderSubs) subscribe(stopped bool, first func() LeaderChange) chan LeaderChange {
	ch := make(chan LeaderChange, leaderChangesBuffer)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if stopped || ls.closed {
		close(ch)
		return ch
	}
	ch <- first()
	if len(ls.subs) >= 2*max(ls.kept, minLeaderSubsSweep) {
		ls.sweepLocked()
	}
	ls.subs = append(ls.subs, weakChan(ch))
	return ch
}

// sweepLocked drops the subscriptions whose channels were collected. Callers hold mu.
func (ls *leaderSubs) sweepLocked() {
	live := ls.subs[:0]
	for _, p := range ls.subs {
		if p.Value() != nil {
			live = append(live, p)
		}
	}
	clear(ls.subs[len(live):])
	ls.subs, ls.kept = live, len(live)
}

// sweep drops the collected subscriptions and returns how many remain.
func (ls *leaderSubs) sweep() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.sweepLocked()
	return len(ls.subs)
}

// publish sends lc to every live subscription without blocking: a subscriber that is behind
// loses its oldest change, never the newest. Collected subscriptions are dropped on the way.
func (ls *leaderSubs) publish(lc LeaderChange) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	live := ls.subs[:0]
	for _, p := range ls.subs {
		ch := strongChan(p)
		if ch == nil {
			continue
		}
		live = append(live, p)
		select {
		case ch <- lc:
		default:
			select {
			case <-ch:
			default:
			}
			select {
			case ch <- lc:
			default:
			}
		}
	}
	clear(ls.subs[len(live):])
	ls.subs, ls.kept = live, len(live)
}

// close closes every live subscription's channel; later subscriptions get a closed channel.
func (ls *leaderSubs) close() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.closed = true
	for _, p := range ls.subs {
		if ch := strongChan(p); ch != nil {
			close(ch)
		}
	}
	ls.subs = nil
}

// LeaderChange reports that a member became leader (ID "" while no leader is known).
type LeaderChange struct {
	ID     string
	IsSelf bool
	Term   uint64
}

// watchLeadership reacts to this node gaining and losing leadership. raft blocks until each
// notification is read, so the work runs elsewhere.
func (s *Store) watchLeadership(notifyCh chan bool) {
	var stopTerm context.CancelFunc = func() {}
	for {
		select {
		case isLeader := <-notifyCh:
			stopTerm()
			s.readyTerm.Store(0)
			s.readySig.fire()
			s.lessor.demote()
			if !isLeader {
				stopTerm = func() {}
				continue
			}
			ctx, cancel := context.WithCancel(s.ctx)
			stopTerm = cancel
			term := s.raft.CurrentTerm()
			s.spawn(func() { s.startTerm(ctx, term) })
		case <-s.ctx.Done():
			stopTerm()
			return
		}
	}
}

// startTerm commits this leader's first command. Once it is applied, every entry of earlier terms
// is applied too, so the commit index is safe to serve reads at and lease state is complete.
func (s *Store) startTerm(ctx context.Context, term uint64) {
	data := (&wire.Command{Kind: wire.KindLeaderStart, Term: term, NodeID: s.id}).Marshal(nil)
	for ctx.Err() == nil {
		err := s.waitFuture(ctx, s.raft.Apply(data, 0))
		if err == nil {
			if s.raft.CurrentTerm() != term || s.raft.State() != raft.Leader {
				return
			}
			s.readyTerm.Store(term)
			s.readySig.fire()
			s.lessor.promote(ctx)
			return
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrRaftShutdown) || ctx.Err() != nil || errors.Is(err, ErrStopped) {
			return
		}
		s.log.Warn("leader start entry failed; retrying", "error", err)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// observeLeaders tracks who leads, for forwarding and LeaderChanges.
func (s *Store) observeLeaders(obsCh chan raft.Observation) {
	for {
		select {
		case o := <-obsCh:
			lo := o.Data.(raft.LeaderObservation)
			s.metrics.leaderObserved(string(lo.LeaderID))
			s.leaderSig.fire()
			term := s.raft.CurrentTerm()
			s.term.Store(term)
			s.leaderSubs.publish(LeaderChange{ID: string(lo.LeaderID), IsSelf: string(lo.LeaderID) == s.id, Term: term})
		case <-s.ctx.Done():
			return
		}
	}
}

// LeaderChanges returns a channel that receives every leader change this member observes,
// starting with the current leader. A subscriber that falls behind loses older changes, never the
// latest: the channel holds at most 16, so one that is never read costs constant memory. The
// channel closes when the store closes. There is nothing to unsubscribe: a channel the host no
// longer holds is garbage-collected and its subscription dropped (the store keeps only a weak
// reference), so calling LeaderChanges often does not accumulate subscriptions.
func (s *Store) LeaderChanges() <-chan LeaderChange {
	return s.leaderSubs.subscribe(s.stopped(), func() LeaderChange {
		_, id := s.raft.LeaderWithID()
		return LeaderChange{ID: string(id), IsSelf: string(id) == s.id, Term: s.raft.CurrentTerm()}
	})
}

// IsLeader reports whether this member is the raft leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the current leader's ID and peer address, or empty strings if none is known.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// leaderAddr returns the leader's peer address, or errNoLeaderKnown.
func (s *Store) leaderAddr() (string, error) {
	addr, id := s.raft.LeaderWithID()
	if id == "" || addr == "" {
		return "", ErrNoLeader
	}
	if string(id) == s.id {
		return "", errNotLeader // raft still thinks it leads but State() said otherwise: retry
	}
	return string(addr), nil
}
