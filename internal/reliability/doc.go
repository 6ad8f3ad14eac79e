// Package reliability holds ember's fault-injection tests: in-process embertest clusters on
// loopback, client traffic recorded on one monotonic clock, exactly one fault per run, and
// checkers that judge the whole run afterwards. The package has no code of its own; everything
// is in its tests. Goals and figures are those of docs/RELIABILITY.md (G1–G3 here).
//
// # Faults
//
// Faults come from embertest.Network (SetFault: cut, one-way blackhole, lost replies, delay
// with jitter, drop) and from embertest.Cluster (Stop and Restart). A run starts the traffic,
// injects its fault after a sixth of the run, heals it after another third, and lets the
// cluster recover for the rest. The faults: partition of the leader and of a follower; a
// one-way cut of everything sent to the leader (it still sends); lost replies from the leader
// (it serves followers' requests, the answers vanish); 75±50 ms delay on every link; 5% of
// writes breaking their connection; stopping and restarting the leader and a follower; a
// partition that leaves the leader with a learner only, the leader's raft lease outlasting
// the fault so that it goes on believing it leads; a follower partitioned while the leader
// snapshots every few dozen entries, so that it catches up by installing a snapshot; and a
// follower removed, wiped and rejoined under its old ID. Every run also carries a membership
// client (adding and removing a learner, listing members) and ends with every member a voter.
//
// # G1: linearizability (linearizability_test.go, client_test.go, model_test.go)
//
// Sixteen clients (twelve pinned to a member, four roaming) run gets, puts (some with
// WithPrevKV), deletes, CAS transactions (If ModRevision(k) = r Then Put Else Get) and leased
// puts with their revokes on sixteen keys, every value unique. The history is checked with porcupine,
// partitioned by key, on a model of each key's value and existence. An operation whose error
// leaves its outcome open (ErrTimeout) may have taken effect at any time after its call; one
// the recorder saw take effect gets the receipt as its return time. Every other ember error
// (ErrNoLeader, ErrStopped, ErrLeaseNotFound...) promises no effect, and the check holds ember
// to that; an error that claims both (internal/writecheck) is a violation. Alongside: every
// acknowledged write is in the recorded history at its revision, every read value is a
// version the history has, revisions never go back in real time across all keys, and once
// healed every member reaches the same applied index with equal HashKV. A failed porcupine
// check leaves history.html (the visualization, with the fault marked) in EMBER_RESULTS_DIR,
// or in the test's temporary directory, and names it.
//
// # G2: watch guarantees (watch_test.go)
//
// Every G1 run also carries an unfiltered recorder watch (the ground truth) and eight watchers
// on the leader and followers: from now, from the past, from the future and from below the
// compaction, with prefixes, ranges, filters, WithPrevKV, progress notifications and a slow
// reader, while a compactor compacts every 300 ms, never past what the recorder has received.
// A watcher on a stopped member resumes on its restart after the last revision it reached.
// Each watch is checked with internal/watchcheck, and must reach the final revision.
//
// # G3: locks and leases (locks_test.go)
//
// Eight contenders take a concurrency.Mutex (session TTL 2 s) on a 3-member cluster and, while
// holding it, read-modify-write a register fenced by FencingToken and write a key in a Txn
// guarded by IsOwner. One holder in ten pauses past its TTL (keepalives stopped with
// Session.Orphan) and then carries on. Each run has one fault: a follower partition, a leader
// partition or a leader stop. Checked: the register never admits two holders with one token
// nor loses an update; tokens increase from a holder to any later one; Lock returns, and
// IsOwner-guarded writes land, only while the holder's key is first in line in the store's
// history; and no session on a healthy member that did not pause loses its lease.
// TestLeases_LeaderChangeExtendsDeadline reproduces one way such a lease is lost, every time:
// a renewal retried across a leader election must find its lease extended by the new leader.
//
// # Running
//
// The CI tier runs within go test ./..., one run per fault (G1 alternates 3- and 5-member
// clusters), 24 s each, in about five minutes on two cores with -race:
//
//	go test -race ./internal/reliability/
//
// -short skips every cluster run. The soak tier runs each G1 fault on 3 and 5 members, and
// every scenario 20 times, a minute each (several hours):
//
//	EMBER_SOAK=1 go test -race -timeout 12h ./internal/reliability/
//
// Knobs, read by both tiers: EMBER_RELIABILITY_RUNS (runs per scenario),
// EMBER_RELIABILITY_DURATION (a Go duration per run), EMBER_RELIABILITY_SEED (the base seed
// every run logs; with -run it repeats a run's random choices, though not its timing), and
// EMBER_RESULTS_DIR (keep failure artefacts). For example, to repeat one scenario:
//
//	EMBER_RELIABILITY_RUNS=50 go test -race -run 'TestLinearizability/lost-replies' ./internal/reliability/
package reliability
