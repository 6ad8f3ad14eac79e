package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// membershipClient makes membership calls on random members throughout a G1 run, under its
// fault: it adds a learner that never starts, lists the members, removes the learner, lists
// again. Every call must end in ember's contract: success, ErrNoLeader, ErrTimeout or
// ErrStopped (the member closed under it), never a raw error (a leader handing over, say);
// ErrNotMember only via a member the fault removed from the configuration (a call made between
// its removal and its stop). A learner change is never refused as unhealthy, and a list after an
// acknowledged change shows it.
type membershipClient struct {
	c   *embertest.Cluster
	rng *rand.Rand

	calls     int
	errs      map[string]int    // error message → count
	breaches  []string          // calls that broke the contract
	notMember map[string]string // member → a call via it refused with ErrNotMember
}

const (
	g1LearnerID   = "g1-learner"
	g1LearnerAddr = "127.0.0.1:2" // nothing listens there: the learner never starts
)

func (mc *membershipClient) run(traffic <-chan struct{}) {
	present := false // the learner is in the configuration, as far as acknowledged calls tell
	known := true    // present is certain: no change since the last acknowledged one is unknown
	for {
		select {
		case <-traffic:
			return
		case <-time.After(20 * time.Millisecond):
		}
		ms := mc.c.Running()
		m := ms[mc.rng.Intn(len(ms))]
		s := m.Store()
		if s == nil {
			continue
		}
		var err error
		change := "add"
		if present || !known && mc.rng.Intn(2) == 0 {
			change = "remove"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if change == "add" {
			err = s.AddLearner(ctx, g1LearnerID, g1LearnerAddr)
		} else {
			err = s.RemoveMember(ctx, g1LearnerID)
			if !known && errors.Is(err, ember.ErrMemberNotFound) {
				err = nil // an earlier add of unknown outcome did not take effect
			}
		}
		mc.check(m.ID, change, err)
		if err == nil {
			present, known = change == "add", true
			list, lerr := s.Members(ctx)
			mc.check(m.ID, "list", lerr)
			if lerr == nil && hasMember(list, g1LearnerID) != present {
				mc.breaches = append(mc.breaches, fmt.Sprintf("Members via %s after an acknowledged %s: %+v", m.ID, change, list))
			}
		} else if errors.Is(err, ember.ErrTimeout) || errors.Is(err, ember.ErrStopped) {
			known = false
		}
		cancel()
	}
}

func hasMember(list []ember.Member, id string) bool {
	for _, m := range list {
		if m.ID == id {
			return true
		}
	}
	return false
}

func (mc *membershipClient) check(member, call string, err error) {
	mc.calls++
	if err == nil {
		return
	}
	if mc.errs == nil {
		mc.errs, mc.notMember = map[string]int{}, map[string]string{}
	}
	mc.errs[err.Error()]++
	if errors.Is(err, ember.ErrNotMember) {
		mc.notMember[member] = fmt.Sprintf("%s via %s: %v", call, member, err)
		return
	}
	if !errors.Is(err, ember.ErrNoLeader) && !errors.Is(err, ember.ErrTimeout) && !errors.Is(err, ember.ErrStopped) {
		mc.breaches = append(mc.breaches, fmt.Sprintf("%s via %s: %v", call, member, err))
	}
}

// breachesGiven returns the calls that broke the contract, given the members the fault took out
// of the configuration.
func (mc *membershipClient) breachesGiven(removed []string) []string {
	out := slices.Clone(mc.breaches)
	for member, call := range mc.notMember {
		if !slices.Contains(removed, member) {
			out = append(out, call)
		}
	}
	sort.Strings(out)
	return out
}

// report logs what the client saw and fails the test for every breach; it returns how many.
// removed names the members the fault took out of the configuration.
func (mc *membershipClient) report(t testing.TB, removed []string) int {
	t.Helper()
	var msgs []string
	for m, n := range mc.errs {
		msgs = append(msgs, fmt.Sprintf("%d × %s", n, m))
	}
	sort.Strings(msgs)
	t.Logf("membership: %d calls; errors: [%s]", mc.calls, strings.Join(msgs, "; "))
	breaches := mc.breachesGiven(removed)
	for i, b := range breaches {
		if i == 20 {
			break
		}
		t.Errorf("membership call outside ember's contract: %s", b)
	}
	return len(breaches)
}

func TestMembershipClient_Contract(t *testing.T) {
	timeout := fmt.Errorf("%w: context deadline exceeded", ember.ErrTimeout)
	notMember := fmt.Errorf("%w: %q is not in this member's configuration", ember.ErrNotMember, "m3")
	tests := []struct {
		name    string
		member  string
		err     error
		removed []string
		breach  bool
	}{
		{"success", "m1", nil, nil, false},
		{"timeout", "m1", timeout, nil, false},
		{"no leader", "m2", ember.ErrNoLeader, nil, false},
		{"stopped", "m3", ember.ErrStopped, nil, false},
		{"not a member via the removed member", "m3", notMember, []string{"m3"}, false},
		{"not a member via a member still in the configuration", "m1", notMember, []string{"m3"}, true},
		{"not a member when nothing was removed", "m3", notMember, nil, true},
		{"unhealthy", "m1", ember.ErrUnhealthy, nil, true},
		{"raw error", "m1", errors.New("leadership lost while committing log"), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mc membershipClient
			mc.check(tt.member, "remove", tt.err)
			if got := len(mc.breachesGiven(tt.removed)) > 0; got != tt.breach {
				t.Errorf("breach = %v, want %v (%v)", got, tt.breach, mc.breachesGiven(tt.removed))
			}
		})
	}
}
