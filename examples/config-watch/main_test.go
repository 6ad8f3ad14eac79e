package main

import (
	"bytes"
	"maps"
	"slices"
	"testing"
)

func TestConfigWatch(t *testing.T) {
	var out bytes.Buffer
	c := newComponent()
	if err := run(&out, c); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())

	c.mu.Lock()
	defer c.mu.Unlock()
	want := map[string]string{"db.host": "db2.internal", "db.port": "6432", "log.level": "error"}
	if !maps.Equal(c.cfg, want) {
		t.Errorf("applied config %v, want the store's final state %v", c.cfg, want)
	}

	// The txn's two puts arrived in one watch response and were applied as one update.
	together := false
	reloads := 0
	for _, u := range c.updates {
		if slices.Contains(u.changes, "db.host=db2.internal") {
			together = slices.Equal(u.changes, []string{"db.host=db2.internal", "db.port=6432"})
		}
		if u.reloadAfter != 0 {
			reloads++
		}
	}
	if !together {
		t.Errorf("the txn's changes were not applied together: %v", c.updates)
	}
	if reloads != 1 {
		t.Errorf("%d re-reads after compaction, want 1: %v", reloads, c.updates)
	}
	// Updates: debug, the txn, feature.search=on after the first resume, the re-read, error.
	if len(c.updates) != 5 {
		t.Errorf("%d updates, want 5: %v", len(c.updates), c.updates)
	}
	for i := 1; i < len(c.updates); i++ {
		if c.updates[i].rev <= c.updates[i-1].rev {
			t.Errorf("update at revision %d after revision %d", c.updates[i].rev, c.updates[i-1].rev)
		}
	}
}
