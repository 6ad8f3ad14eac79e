package concurrency

import "errors"

// Errors returned by the recipes. Match them with errors.Is.
var (
	// ErrLocked: TryLock found the lock held, or waited for, by another session.
	ErrLocked = errors.New("ember: mutex: locked by another session")
	// ErrLockReleased: Unlock was called on a Mutex that does not hold the lock.
	ErrLockReleased = errors.New("ember: mutex: lock has already been released")
	// ErrSessionExpired: the session ended, or its key was deleted, before the lock or
	// leadership it waited for came.
	ErrSessionExpired = errors.New("ember: session: session expired")
	// ErrElectionNotLeader: Proclaim was called by an Election that does not lead.
	ErrElectionNotLeader = errors.New("ember: election: not leader")
	// ErrElectionNoLeader: Leader found no candidate in the election.
	ErrElectionNoLeader = errors.New("ember: election: no leader")
)
