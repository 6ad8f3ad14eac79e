package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
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
// ErrStopped (the member closed under it), never a raw error (a leader handing over, say). A
// learner change is never refused as unhealthy, and a list after an acknowledged change shows it.
type membershipClient struct {
	c   *embertest.Cluster
	rng *rand.Rand

	calls    int
	errs     map[string]int // error message → count
	breaches []string       // calls that broke the contract
}

const (
	g1LearnerID   = "g1-learner"
	g1LearnerAddr = "127.0.0.1:2" // nothing listens there: the learner never starts
)

func (mc *membershipClient) run(traffic <-chan struct{}) {
	mc.errs = map[string]int{}
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
	mc.errs[err.Error()]++
	if !errors.Is(err, ember.ErrNoLeader) && !errors.Is(err, ember.ErrTimeout) && !errors.Is(err, ember.ErrStopped) {
		mc.breaches = append(mc.breaches, fmt.Sprintf("%s via %s: %v", call, member, err))
	}
}

// report logs what the client saw and fails the test for every breach; it returns how many.
func (mc *membershipClient) report(t testing.TB) int {
	t.Helper()
	var msgs []string
	for m, n := range mc.errs {
		msgs = append(msgs, fmt.Sprintf("%d × %s", n, m))
	}
	sort.Strings(msgs)
	t.Logf("membership: %d calls; errors: [%s]", mc.calls, strings.Join(msgs, "; "))
	for i, b := range mc.breaches {
		if i == 20 {
			break
		}
		t.Errorf("membership call outside ember's contract: %s", b)
	}
	return len(mc.breaches)
}
