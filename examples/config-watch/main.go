// Command config-watch keeps a component's configuration in step with a key tree in ember,
// /config/app/*. The component reads the whole tree once with a prefix Get, then watches from
// the Get's revision + 1 and applies each watch response as one atomic update, so a Txn that
// changes two keys together is never seen half applied.
//
// It then shows the two ways a watcher comes back after a restart: it resumes from the last
// revision it applied and catches up on what it missed, and, when that history has been
// compacted in the meantime, the watch fails with ErrCompacted and the component re-reads the
// whole tree instead.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ember-kv/ember"
)

const configPfx = "/config/app/"

func main() {
	if err := run(os.Stdout, newComponent()); err != nil {
		log.Fatal(err)
	}
}

func run(w io.Writer, c *component) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	dir, err := os.MkdirTemp("", "ember-config-watch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// One embedded member is enough here: watches behave the same on every member.
	s, err := ember.Open(dir,
		ember.WithHeartbeatTimeout(200*time.Millisecond),
		ember.WithElectionTimeout(200*time.Millisecond))
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		return err
	}

	for _, kv := range [][2]string{
		{"db.host", "db1.internal"}, {"db.port", "5432"}, {"log.level", "info"}, {"feature.search", "off"},
	} {
		if _, err := s.Put(ctx, configPfx+kv[0], kv[1]); err != nil {
			return err
		}
	}

	if err := c.load(ctx, s); err != nil {
		return err
	}
	fmt.Fprintf(w, "component loads the config at revision %d: %s\n", c.revision(), c.describe())

	updates := make(chan update)
	watcher := startWatcher(ctx, c, s, updates)
	// next waits for the component to apply the next update, and narrates it.
	next := func() error {
		select {
		case u := <-updates:
			fmt.Fprintf(w, "  component %s; config: %s\n", u, c.describe())
			return nil
		case err := <-watcher.done:
			return fmt.Errorf("watcher ended: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	fmt.Fprintln(w, "admin sets log.level=debug")
	if _, err := s.Put(ctx, configPfx+"log.level", "debug"); err != nil {
		return err
	}
	if err := next(); err != nil {
		return err
	}

	fmt.Fprintln(w, "admin moves the database in one txn: db.host=db2.internal, db.port=6432")
	if _, err := s.Txn(ctx).Then(
		ember.OpPut(configPfx+"db.host", "db2.internal"),
		ember.OpPut(configPfx+"db.port", "6432"),
	).Commit(); err != nil {
		return err
	}
	if err := next(); err != nil {
		return err
	}

	if err := watcher.stop(); err != nil {
		return err
	}
	fmt.Fprintf(w, "the watcher restarts; it last applied revision %d\n", c.revision())
	fmt.Fprintln(w, "admin sets feature.search=on while it is down")
	if _, err := s.Put(ctx, configPfx+"feature.search", "on"); err != nil {
		return err
	}
	fmt.Fprintf(w, "the watcher resumes from revision %d\n", c.revision()+1)
	watcher = startWatcher(ctx, c, s, updates)
	if err := next(); err != nil {
		return err
	}

	if err := watcher.stop(); err != nil {
		return err
	}
	fmt.Fprintf(w, "the watcher restarts again; it last applied revision %d\n", c.revision())
	fmt.Fprintln(w, "admin sets log.level=warn and deletes feature.search while it is down")
	if _, err := s.Put(ctx, configPfx+"log.level", "warn"); err != nil {
		return err
	}
	del, err := s.Delete(ctx, configPfx+"feature.search")
	if err != nil {
		return err
	}
	// As auto-compaction would, drop the history the watcher has not read yet.
	if _, err := s.Compact(ctx, del.Header.Revision); err != nil {
		return err
	}
	fmt.Fprintf(w, "the store compacts its history up to revision %d\n", del.Header.Revision)
	fmt.Fprintf(w, "the watcher tries to resume from revision %d\n", c.revision()+1)
	watcher = startWatcher(ctx, c, s, updates)
	if err := next(); err != nil {
		return err
	}

	fmt.Fprintln(w, "admin sets log.level=error")
	if _, err := s.Put(ctx, configPfx+"log.level", "error"); err != nil {
		return err
	}
	if err := next(); err != nil {
		return err
	}
	if err := watcher.stop(); err != nil {
		return err
	}

	// The applied config must be exactly what the store holds now.
	resp, err := s.Get(ctx, configPfx, ember.WithPrefix())
	if err != nil {
		return err
	}
	stored := map[string]string{}
	for _, kv := range resp.Kvs {
		stored[strings.TrimPrefix(string(kv.Key), configPfx)] = string(kv.Value)
	}
	if applied := c.snapshot(); !maps.Equal(applied, stored) {
		return fmt.Errorf("applied config %v differs from the store's %v", applied, stored)
	}
	fmt.Fprintf(w, "applied config matches the store at revision %d\n", resp.Header.Revision)
	return nil
}

// component is the configured part of the application: it holds the config it applied and
// the revision that config reflects.
type component struct {
	mu      sync.Mutex
	cfg     map[string]string // key below configPfx → value
	rev     int64
	updates []update // every update applied, in order
}

// update is one atomic change to the component's config.
type update struct {
	rev     int64
	changes []string // "key=value" or "key deleted", for a watch response
	// reloadAfter is set for a full re-read: the first revision the watch could not resume
	// from.
	reloadAfter int64
}

func (u update) String() string {
	if u.reloadAfter != 0 {
		return fmt.Sprintf("finds revision %d compacted and re-reads the whole config at revision %d",
			u.reloadAfter, u.rev)
	}
	return fmt.Sprintf("applies revision %d in one step: %s", u.rev, strings.Join(u.changes, ", "))
}

func newComponent() *component { return &component{cfg: map[string]string{}} }

// load replaces the config with the tree's current content.
func (c *component) load(ctx context.Context, s *ember.Store) error {
	resp, err := s.Get(ctx, configPfx, ember.WithPrefix())
	if err != nil {
		return err
	}
	cfg := map[string]string{}
	for _, kv := range resp.Kvs {
		cfg[strings.TrimPrefix(string(kv.Key), configPfx)] = string(kv.Value)
	}
	c.mu.Lock()
	c.cfg, c.rev = cfg, resp.Header.Revision
	c.mu.Unlock()
	return nil
}

// follow applies every change after the component's revision until ctx ends. If that history
// is compacted, it re-reads the whole tree and goes on from there. It sends each update it
// applies on updates.
func (c *component) follow(ctx context.Context, s *ember.Store, updates chan<- update) error {
	for {
		from := c.revision() + 1
		err := c.watch(ctx, s, from, updates)
		if !errors.Is(err, ember.ErrCompacted) {
			return err
		}
		// The changes between from and the compaction are gone; only the current state is
		// left to read.
		if err := c.load(ctx, s); err != nil {
			return err
		}
		u := update{rev: c.revision(), reloadAfter: from}
		c.record(u)
		if !send(ctx, updates, u) {
			return ctx.Err()
		}
	}
}

func (c *component) watch(ctx context.Context, s *ember.Store, from int64, updates chan<- update) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range s.Watch(ctx, configPfx, ember.WithPrefix(), ember.WithRev(from)) {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) == 0 {
			continue
		}
		// Every event of a revision comes in the same response, so applying a response
		// under one lock never exposes half of a txn.
		u := update{}
		c.mu.Lock()
		for _, ev := range wr.Events {
			key := strings.TrimPrefix(string(ev.Kv.Key), configPfx)
			if ev.Type == ember.EventTypeDelete {
				delete(c.cfg, key)
				u.changes = append(u.changes, key+" deleted")
			} else {
				c.cfg[key] = string(ev.Kv.Value)
				u.changes = append(u.changes, key+"="+string(ev.Kv.Value))
			}
			u.rev = ev.Kv.ModRevision
		}
		c.rev = u.rev
		c.updates = append(c.updates, u)
		c.mu.Unlock()
		if !send(ctx, updates, u) {
			return ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errWatchClosed
}

// errWatchClosed reports a watch that the store ended without saying why, as when it closes.
var errWatchClosed = errors.New("watch closed")

func (c *component) record(u update) {
	c.mu.Lock()
	c.updates = append(c.updates, u)
	c.mu.Unlock()
}

func (c *component) revision() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev
}

func (c *component) snapshot() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.cfg)
}

// describe formats the config in key order.
func (c *component) describe() string {
	cfg := c.snapshot()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		parts = append(parts, k+"="+cfg[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func send(ctx context.Context, updates chan<- update, u update) bool {
	select {
	case updates <- u:
		return true
	case <-ctx.Done():
		return false
	}
}

// watcher is a running follow loop.
type watcher struct {
	cancel context.CancelFunc
	done   chan error
}

func startWatcher(ctx context.Context, c *component, s *ember.Store, updates chan<- update) *watcher {
	ctx, cancel := context.WithCancel(ctx)
	wt := &watcher{cancel: cancel, done: make(chan error, 1)}
	go func() { wt.done <- c.follow(ctx, s, updates) }()
	return wt
}

// stop ends the loop and waits for it; the cancellation that stop causes is not an error.
func (wt *watcher) stop() error {
	wt.cancel()
	if err := <-wt.done; !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
