// Command leader-election runs a singleton job ("generate report N") in a service with three
// instances, each embedding one member of a three-member ember cluster. Every instance
// campaigns in a concurrency.Election; only the elected one runs the job. The demo then stops
// the member under the leading instance, as a crash would, and another instance takes over
// once the old leader's session lease has expired.
//
// Each report number is written with a Txn that also compares the election key's create
// revision, so a leader that has lost its election cannot write, even if it still runs.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
	"github.com/ember-kv/ember/examples/internal/demo"
)

const (
	electionPfx   = "/election/report-job"
	lastReportKey = "/jobs/report-job/last"
	// sessionTTL is short so that the takeover after a crash is quick: a crashed leader's
	// lease, and with it its election key, lives on for up to this long.
	sessionTTL = 2
	// reportEvery is how often the leader runs the job.
	reportEvery = 250 * time.Millisecond
	// reportsPerLeader is how many reports each leader generates before the demo moves on.
	reportsPerLeader = 3
)

func main() {
	if err := run(os.Stdout, newJobLog()); err != nil {
		log.Fatal(err)
	}
}

func run(w io.Writer, jobs *jobLog) error {
	w = demo.NewSyncWriter(w)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	root, err := os.MkdirTemp("", "ember-leader-election-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	ids := []string{"a", "b", "c"}
	stores, err := demo.StartCluster(ctx, root, ids)
	if err != nil {
		return err
	}
	stopped := map[string]bool{}
	defer func() {
		for id, s := range stores {
			if !stopped[id] {
				s.Close()
			}
		}
	}()
	fmt.Fprintf(w, "cluster of %d members is ready\n", len(ids))

	// The instances campaign until svcCtx ends; their sessions outlive it so that each leader
	// can resign and the others can withdraw before the members close.
	svcCtx, stopServices := context.WithCancel(ctx)
	defer stopServices()
	sessions := map[string]*concurrency.Session{}
	var wg sync.WaitGroup
	for _, id := range ids {
		sess, err := concurrency.NewSession(stores[id], concurrency.WithTTL(sessionTTL))
		if err != nil {
			return err
		}
		sessions[id] = sess
		in := &instance{id: id, sess: sess, w: w, jobs: jobs}
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.serve(svcCtx)
		}()
	}

	first, err := jobs.waitReports(ctx, "", reportsPerLeader)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "stopping member %s, under the leading instance (as if it crashed)\n", first)
	stopAt := time.Now()
	stopped[first] = true
	if err := stores[first].Close(); err != nil {
		return err
	}
	second, err := jobs.waitReports(ctx, first, reportsPerLeader)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "instance %s took over %.1fs after member %s stopped\n",
		second, time.Since(stopAt).Seconds(), first)

	stopServices()
	wg.Wait()
	for id, sess := range sessions {
		if !stopped[id] {
			sess.Close()
		}
	}
	if jobs.Overlaps() > 0 {
		return fmt.Errorf("the job ran on two instances at once %d times", jobs.Overlaps())
	}
	fmt.Fprintln(w, "shut down; the job never ran on two instances at once")
	return nil
}

// instance is one instance of the service: it campaigns for the job and runs it while it
// leads.
type instance struct {
	id   string
	sess *concurrency.Session
	w    io.Writer
	jobs *jobLog
}

func (in *instance) serve(ctx context.Context) {
	e := concurrency.NewElection(in.sess, electionPfx)
	if err := e.Campaign(ctx, in.id); err != nil {
		// ctx ended (the demo is over) or the session did (the member stopped).
		return
	}
	fmt.Fprintf(in.w, "instance %s is elected (election key created at revision %d)\n", in.id, e.Rev())
	in.jobs.begin(in.id)
	defer in.jobs.end(in.id)

	// The job's requests end with the session too, so that a leader whose session is over
	// stops at once, even in the middle of a report.
	jobCtx, stopJob := context.WithCancel(ctx)
	defer stopJob()
	defer context.AfterFunc(in.sess.Ctx(), stopJob)()

	tick := time.NewTicker(reportEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Resign so that the next candidate need not wait for this session's lease.
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := e.Resign(rctx); err == nil {
				fmt.Fprintf(in.w, "instance %s resigns\n", in.id)
			}
			return
		case <-in.sess.Done():
			fmt.Fprintf(in.w, "instance %s: session ended, stops running the job\n", in.id)
			return
		case <-tick.C:
		}
		n, err := in.generateReport(jobCtx, e)
		if err != nil {
			fmt.Fprintf(in.w, "instance %s stops running the job: %v\n", in.id, err)
			return
		}
		fmt.Fprintf(in.w, "instance %s: generate report %d\n", in.id, n)
		in.jobs.report(in.id, n)
	}
}

var errNotLeader = errors.New("no longer the leader")

// generateReport runs the job once: it takes the next report number and records it, but only
// if this instance still leads and nobody else recorded a report in between.
func (in *instance) generateReport(ctx context.Context, e *concurrency.Election) (int, error) {
	s := in.sess.Store()
	resp, err := s.Get(ctx, lastReportKey)
	if err != nil {
		return 0, err
	}
	last, modRev := 0, int64(0)
	if len(resp.Kvs) > 0 {
		if last, err = strconv.Atoi(string(resp.Kvs[0].Value)); err != nil {
			return 0, err
		}
		modRev = resp.Kvs[0].ModRevision
	}
	n := last + 1
	txn, err := s.Txn(ctx).
		If(ember.Compare(ember.CreateRevision(e.Key()), "=", e.Rev()),
			ember.Compare(ember.ModRevision(lastReportKey), "=", modRev)).
		Then(ember.OpPut(lastReportKey, strconv.Itoa(n))).
		Commit()
	if err != nil {
		return 0, err
	}
	if !txn.Succeeded {
		return 0, errNotLeader
	}
	return n, nil
}

// jobLog records who runs the job and what it produced, and notices when two instances run it
// at once.
type jobLog struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change, to wake waitReports
	running  []string      // instances running the job right now
	runners  []string      // every instance that ran the job, in order
	reports  []report
	overlaps int
}

type report struct {
	n  int
	by string
}

func newJobLog() *jobLog { return &jobLog{changed: make(chan struct{})} }

func (j *jobLog) begin(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.running) > 0 {
		j.overlaps++
	}
	j.running = append(j.running, id)
	j.runners = append(j.runners, id)
	j.notify()
}

func (j *jobLog) end(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, r := range j.running {
		if r == id {
			j.running = append(j.running[:i], j.running[i+1:]...)
			break
		}
	}
	j.notify()
}

func (j *jobLog) report(id string, n int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.reports = append(j.reports, report{n: n, by: id})
	j.notify()
}

// notify wakes the waiters; j.mu must be held.
func (j *jobLog) notify() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// waitReports waits until an instance other than not has generated n reports, and returns it.
func (j *jobLog) waitReports(ctx context.Context, not string, n int) (string, error) {
	for {
		j.mu.Lock()
		counts := map[string]int{}
		for _, r := range j.reports {
			counts[r.by]++
			if r.by != not && counts[r.by] == n {
				j.mu.Unlock()
				return r.by, nil
			}
		}
		changed := j.changed
		j.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %d reports: %w", n, ctx.Err())
		}
	}
}

// Overlaps returns how many times an instance started the job while another still ran it.
func (j *jobLog) Overlaps() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.overlaps
}
