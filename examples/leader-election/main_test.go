package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestLeaderElection(t *testing.T) {
	var out bytes.Buffer
	jobs := newJobLog()
	if err := run(&out, jobs); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())

	jobs.mu.Lock()
	defer jobs.mu.Unlock()
	if jobs.overlaps != 0 {
		t.Errorf("the job ran on two instances at once %d times", jobs.overlaps)
	}
	if len(jobs.runners) != 2 || jobs.runners[0] == jobs.runners[1] {
		t.Fatalf("runners %v, want the first leader and then one other instance", jobs.runners)
	}
	if !strings.Contains(out.String(), "stopping member "+jobs.runners[0]) {
		t.Errorf("the stopped member is not the first leader %s", jobs.runners[0])
	}
	// Reports are numbered without gaps or repeats across the takeover, and once the second
	// leader has generated one, the first never generates another.
	handedOver := false
	for i, r := range jobs.reports {
		if r.n != i+1 {
			t.Errorf("report %d is numbered %d", i+1, r.n)
		}
		switch r.by {
		case jobs.runners[1]:
			handedOver = true
		case jobs.runners[0]:
			if handedOver {
				t.Errorf("report %d by the old leader %s after the takeover", r.n, r.by)
			}
		default:
			t.Errorf("report %d by %s, which never led", r.n, r.by)
		}
	}
	if !handedOver {
		t.Errorf("no report by the new leader %s", jobs.runners[1])
	}
}
