package readindex

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// answer is how a fake member answers a confirmation request.
type answer int

const (
	ack      answer = iota
	refuse          // follows another leader or term
	staleAck        // acks an earlier round, as a reply to an older request would
)

func TestConfirm_CountsVotersOfThisRoundOnly(t *testing.T) {
	voters := func(ids ...string) []Member {
		var ms []Member
		for _, id := range ids {
			ms = append(ms, Member{ID: id, Addr: id + ":1", Voter: true})
		}
		return ms
	}
	learner := func(id string) Member { return Member{ID: id, Addr: id + ":1"} }
	tests := []struct {
		name    string
		members []Member
		answers map[string]answer // absent: the member must not be asked
		wantErr bool
	}{
		{name: "alone", members: voters("m1")},
		{name: "one of two others acks", members: voters("m1", "m2", "m3"),
			answers: map[string]answer{"m2": ack, "m3": refuse}},
		{name: "learner acks, voters refuse", members: append(voters("m1", "m2", "m3"), learner("l1")),
			answers: map[string]answer{"m2": refuse, "m3": refuse}, wantErr: true},
		{name: "learners ack, one voter of five does", members: append(voters("m1", "m2", "m3", "m4", "m5"), learner("l1"), learner("l2")),
			answers: map[string]answer{"m2": ack, "m3": refuse, "m4": refuse, "m5": refuse}, wantErr: true},
		{name: "stale ack", members: voters("m1", "m2", "m3"),
			answers: map[string]answer{"m2": staleAck, "m3": refuse}, wantErr: true},
		{name: "stale acks", members: voters("m1", "m2", "m3"),
			answers: map[string]answer{"m2": staleAck, "m3": staleAck}, wantErr: true},
		// A leader being removed is no longer a voter of the latest configuration: its own
		// vote does not count either.
		{name: "self not a voter, one of two acks", members: append(voters("m2", "m3"), learner("m1")),
			answers: map[string]answer{"m2": ack, "m3": refuse}, wantErr: true},
		{name: "self not a voter, both ack", members: append(voters("m2", "m3"), learner("m1")),
			answers: map[string]answer{"m2": ack, "m3": ack}},
		{name: "no voters", members: []Member{learner("m1")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const round = 7
			var mu sync.Mutex
			var asked []string
			ask := func(ctx context.Context, m Member, r uint64) (uint64, error) {
				mu.Lock()
				asked = append(asked, m.ID)
				mu.Unlock()
				if r != round {
					t.Errorf("%s asked for round %d, want %d", m.ID, r, round)
				}
				switch tt.answers[m.ID] {
				case ack:
					return r, nil
				case staleAck:
					return r - 1, nil
				}
				return 0, errors.New("not your follower")
			}
			err := Confirm(context.Background(), "m1", tt.members, round, ask)
			if tt.wantErr != (err != nil) {
				t.Fatalf("Confirm = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrNoQuorum) {
				t.Fatalf("Confirm = %v, want ErrNoQuorum", err)
			}
			// Only voters other than self are asked (all of them, unless a majority was
			// decided early, which the table avoids for failures). A refusal can decide a
			// failed round before every ask has started: the rest start all the same.
			if tt.wantErr {
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					mu.Lock()
					n := len(asked)
					mu.Unlock()
					if n >= len(tt.answers) {
						break
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range asked {
				if _, ok := tt.answers[id]; !ok {
					t.Errorf("%s was asked; only voters other than self may be", id)
				}
			}
			if tt.wantErr && len(asked) != len(tt.answers) {
				sort.Strings(asked)
				t.Errorf("asked %v, want every one of %v", asked, tt.answers)
			}
		})
	}
}

// A round without a majority ends with ctx, and its asks end by ctx's deadline.
func TestConfirm_DeadlineWithoutMajority(t *testing.T) {
	var running atomic.Int32
	ask := func(ctx context.Context, m Member, r uint64) (uint64, error) {
		running.Add(1)
		defer running.Add(-1)
		if m.ID == "m2" {
			return r, nil
		}
		<-ctx.Done() // partitioned: no answer
		return 0, ctx.Err()
	}
	members := []Member{{ID: "m1", Voter: true}, {ID: "m2", Voter: true}, {ID: "m3", Voter: true}, {ID: "m4", Voter: true}, {ID: "m5", Voter: true}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := Confirm(ctx, "m1", members, 1, ask)
	if !errors.Is(err, ErrNoQuorum) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Confirm = %v, want ErrNoQuorum and DeadlineExceeded", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for running.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d asks still running long after the round's deadline", running.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// A voter still answering when the round is decided is not cut off: its call may be dialing
// the connection the next rounds need.
func TestConfirm_DecidedRoundLeavesSlowVoterAlone(t *testing.T) {
	release := make(chan struct{})
	slow := make(chan error, 1)
	ask := func(ctx context.Context, m Member, r uint64) (uint64, error) {
		if m.ID == "m2" {
			return r, nil
		}
		select {
		case <-release:
			slow <- ctx.Err()
			return r, nil
		case <-ctx.Done():
			slow <- ctx.Err()
			return 0, ctx.Err()
		}
	}
	members := []Member{{ID: "m1", Voter: true}, {ID: "m2", Voter: true}, {ID: "m3", Voter: true}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := Confirm(ctx, "m1", members, 1, ask); err != nil {
		t.Fatalf("Confirm = %v", err)
	}
	cancel() // the caller is done with the round
	time.Sleep(10 * time.Millisecond)
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("the slow voter's call was cancelled (%v) once the round was decided", err)
	}
}

// fakeVoters answers confirmation requests of each round only when the test releases it.
type fakeVoters struct {
	mu    sync.Mutex
	gates map[uint64]chan struct{} // round → closed when its acks may go out
	asked map[uint64]int           // round → requests received
}

func (f *fakeVoters) gate(round uint64) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.gates[round]
	if !ok {
		g = make(chan struct{})
		f.gates[round] = g
	}
	return g
}

func (f *fakeVoters) ask(ctx context.Context, m Member, round uint64) (uint64, error) {
	f.mu.Lock()
	f.asked[round]++
	f.mu.Unlock()
	select {
	case <-f.gate(round):
		return round, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (f *fakeVoters) waitAsked(t *testing.T, round uint64, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		got := f.asked[round]
		f.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d: %d requests, want %d", round, got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A read that arrives while a round is in flight is not served by that round's acks, even
// though they arrive after the read began: the round's requests, and the commit index it
// captured, predate the read. It waits for the next round, which captures a newer index.
func TestBatcher_AcksOfAnEarlierRoundDoNotServeALaterRead(t *testing.T) {
	members := []Member{{ID: "m1", Voter: true}, {ID: "m2", Voter: true}, {ID: "m3", Voter: true}, {ID: "l1"}}
	voters := &fakeVoters{gates: map[uint64]chan struct{}{}, asked: map[uint64]int{}}
	var commit atomic.Uint64
	commit.Store(10)
	var rounds atomic.Uint64
	b := New(func(ctx context.Context) (uint64, error) {
		idx := commit.Load()
		if err := Confirm(ctx, "m1", members, rounds.Add(1), voters.ask); err != nil {
			return 0, err
		}
		return idx, nil
	})
	type result struct {
		idx uint64
		err error
	}
	get := func() chan result {
		ch := make(chan result, 1)
		go func() {
			idx, err := b.Get(context.Background())
			ch <- result{idx, err}
		}()
		return ch
	}

	first := get()
	voters.waitAsked(t, 1, 2)
	commit.Store(20) // a write is acknowledged, then the second read begins
	second := get()
	time.Sleep(20 * time.Millisecond) // let the second read join whatever it would join
	close(voters.gate(1))
	if r := <-first; r.err != nil || r.idx != 10 {
		t.Fatalf("first read: index %d, %v; want 10", r.idx, r.err)
	}
	voters.waitAsked(t, 2, 2)
	select {
	case r := <-second:
		t.Fatalf("second read served (index %d, %v) before its own round was acked", r.idx, r.err)
	case <-time.After(20 * time.Millisecond):
	}
	close(voters.gate(2))
	if r := <-second; r.err != nil || r.idx != 20 {
		t.Fatalf("second read: index %d, %v; want 20", r.idx, r.err)
	}
	voters.mu.Lock()
	defer voters.mu.Unlock()
	if got := fmt.Sprint(voters.asked); got != "map[1:2 2:2]" {
		t.Fatalf("requests per round %s, want two voters asked in each of two rounds (never the learner)", got)
	}
}
