package readindex

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNoQuorum means a confirmation round ended without acks from a majority of the voters.
var ErrNoQuorum = errors.New("ember: leadership not confirmed by a majority of voters")

// Member is one server of the leader's latest configuration.
type Member struct {
	ID    string
	Addr  string
	Voter bool // false for a learner (raft non-voter), whose ack never counts
}

// Ask sends one confirmation request of round to m and returns the round m's ack names. An
// error means m refused (it follows another leader or term) or did not answer.
type Ask func(ctx context.Context, m Member, round uint64) (acked uint64, err error)

// Confirm runs one confirmation round for a leader whose ID is self: it asks every other voter
// of members at once and returns nil as soon as a majority of the voters, self included if it is
// one, acked this very round. Learners are not asked: they take no part in elections, so their
// word says nothing about whether a newer leader exists. An ack naming another round (a reply
// to an older request) does not count.
//
// It returns an error wrapping ErrNoQuorum once a majority can no longer ack, or when ctx ends
// first (the error then also wraps ctx.Err()).
//
// Asks still running when the round is decided are not cancelled, nor when ctx is: cancelling a
// call mid-dial would abort the connection to a slow voter again in every round. They run until
// they return or ctx's deadline, if it has one, passes.
func Confirm(ctx context.Context, self string, members []Member, round uint64, ask Ask) error {
	voters, acks := 0, 0
	var others []Member
	for _, m := range members {
		switch {
		case !m.Voter:
		case m.ID == self:
			voters++
			acks++
		default:
			voters++
			others = append(others, m)
		}
	}
	quorum := voters/2 + 1
	if acks >= quorum {
		return nil
	}
	if voters == 0 {
		return fmt.Errorf("%w: no voters in the configuration", ErrNoQuorum)
	}

	askCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if d, ok := ctx.Deadline(); ok {
		cancel()
		askCtx, cancel = context.WithDeadline(context.WithoutCancel(ctx), d)
	}
	var pending sync.WaitGroup
	pending.Add(len(others))
	go func() {
		pending.Wait()
		cancel()
	}()
	results := make(chan error, len(others)) // never blocks an ask that outlives the round
	for _, m := range others {
		go func() {
			defer pending.Done()
			got, err := ask(askCtx, m, round)
			if err == nil && got != round {
				err = fmt.Errorf("ack for round %d, want %d", got, round)
			}
			if err != nil {
				err = fmt.Errorf("%s: %w", m.ID, err)
			}
			results <- err
		}()
	}
	// Once every ask answered, acks or refusals decided: voters-len(refusals) equals acks.
	var refusals []error
	for {
		select {
		case err := <-results:
			if err == nil {
				if acks++; acks >= quorum {
					return nil
				}
				continue
			}
			refusals = append(refusals, err)
			if voters-len(refusals) < quorum {
				return fmt.Errorf("%w: %d of %d voters acked round %d, need %d: %w", ErrNoQuorum, acks, voters, round, quorum, errors.Join(refusals...))
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: %d of %d voters acked round %d, need %d: %w", ErrNoQuorum, acks, voters, round, quorum, ctx.Err())
		}
	}
}
