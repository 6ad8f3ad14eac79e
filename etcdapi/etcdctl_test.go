package etcdapi_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ctlStep is one etcdctl command of the acceptance sequence. Revisions in the comments are
// the store's revision after the step; both deployments start empty, at revision 1.
type ctlStep struct {
	name string
	// args are etcdctl's arguments after --endpoints. "<lease-N>" stands for the Nth lease ID
	// the deployment printed, "<snapshot>" for a file in a fresh directory.
	args  []string
	stdin string

	// Background commands (watch, lock, elect) run across steps under a name.
	start string // start args under this name; the step's output is what it printed so far
	stop  string // end the command of this name; the step's output is everything it printed
	until string // regexp the command's stdout must match before the step ends
	exits bool   // stop: the command ends by itself after printing until; do not interrupt it

	// waitKeys: after the step, wait until this many keys exist under waitPrefix, so that a
	// blocked lock or campaign is queued before the next step.
	waitPrefix string
	waitKeys   int64

	fails   bool     // etcdctl is expected to exit non-zero
	compare comparer // nil: the normalized outputs must be equal
}

// command describes the step in failure messages.
func (st ctlStep) command() string {
	if st.stop != "" {
		return "output of background command " + st.stop
	}
	return "etcdctl " + strings.Join(st.args, " ")
}

// Column names etcdctl prints with -w table; its simple output has the same columns.
var (
	memberColumns = []string{"ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"}
	statusColumns = []string{"ENDPOINT", "ID", "VERSION", "STORAGE VERSION", "DB SIZE", "IN USE",
		"PERCENTAGE NOT IN USE", "QUOTA", "IS LEADER", "IS LEARNER", "RAFT TERM", "RAFT INDEX",
		"RAFT APPLIED INDEX", "ERRORS", "DOWNGRADE TARGET VERSION", "DOWNGRADE ENABLED"}
	// The member's identity and addresses differ between deployments.
	memberVariable = []string{"ID", "NAME", "PEER ADDRS", "CLIENT ADDRS"}
	// Identity, versions, sizes and raft positions differ; leadership, learner state,
	// quota, errors and downgrade state must not.
	statusVariable = []string{"ID", "VERSION", "STORAGE VERSION", "DB SIZE", "IN USE",
		"PERCENTAGE NOT IN USE", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX"}
)

var ctlSteps = []ctlStep{
	// Both deployments start empty: revision 1, no keys.
	{name: "get all of empty store", args: []string{"get", "", "--prefix", "-w", "json"}},

	{name: "put", args: []string{"put", "foo", "bar"}},                      // 2
	{name: "put prev-kv", args: []string{"put", "foo", "baz", "--prev-kv"}}, // 3
	{name: "get", args: []string{"get", "foo"}},
	{name: "get json", args: []string{"get", "foo", "-w", "json"}},
	{name: "get fields", args: []string{"get", "foo", "-w", "fields"}},
	{name: "get at revision", args: []string{"get", "foo", "--rev=2"}},
	{name: "get future revision", args: []string{"get", "foo", "--rev=100"}, fails: true},
	{name: "get missing", args: []string{"get", "nope"}},
	{name: "put k/1", args: []string{"put", "k/1", "a"}}, // 4
	{name: "put k/2", args: []string{"put", "k/2", "b"}}, // 5
	{name: "put k/3", args: []string{"put", "k/3", "c"}}, // 6
	{name: "get prefix", args: []string{"get", "--prefix", "k/"}},
	{name: "get prefix json", args: []string{"get", "--prefix", "k/", "-w", "json"}},
	{name: "get prefix sorted limited", args: []string{"get", "--prefix", "k/", "--keys-only", "--sort-by=KEY", "--order=DESCEND", "--limit=2"}},
	{name: "get prefix count", args: []string{"get", "--prefix", "k/", "--count-only", "-w", "fields"}},
	{name: "get from key", args: []string{"get", "--from-key", "k/2"}},
	{name: "del", args: []string{"del", "k/3"}}, // 7
	{name: "del missing", args: []string{"del", "nope"}},
	{name: "del prefix prev-kv", args: []string{"del", "--prefix", "k/", "--prev-kv"}}, // 8
	{name: "get prefix after del", args: []string{"get", "--prefix", "k/", "-w", "json"}},

	{name: "txn interactive success", args: []string{"txn", "-i"}, // 9
		stdin: "value(\"foo\") = \"baz\"\nmod(\"foo\") > \"2\"\n\nput foo qux\nget foo\n\nput foo never\n\n"},
	{name: "txn interactive failure", args: []string{"txn", "-i"},
		stdin: "mod(\"foo\") < \"3\"\n\nput foo never\n\nget foo\nget --prefix k/\n\n"},
	{name: "txn json", args: []string{"txn", "-w", "json"}, // 10
		stdin: "create(\"foo\") = \"2\"\nversion(\"foo\") = \"3\"\n\nput bar 1\nget foo\n\n\n"},

	// A live watch. Interactive mode lets the test ask for a progress notification after the
	// watch request: its arrival proves the watch is in place before anything is written.
	{name: "watch start", args: []string{"watch", "-i"}, start: "watch",
		stdin: "watch --prefix w/\nprogress\n", until: `progress notify: \d+\n`},
	{name: "put w/a", args: []string{"put", "w/a", "1"}}, // 11
	{name: "put w/b", args: []string{"put", "w/b", "2"}}, // 12
	{name: "del w/a", args: []string{"del", "w/a"}},      // 13
	{name: "watch events", stop: "watch", until: `DELETE\nw/a\n`},
	{name: "watch from revision", args: []string{"watch", "--prefix", "w/", "--rev=11", "--prev-kv"},
		start: "history", until: `DELETE\nw/a\n1\nw/a\n\n`},
	{name: "watch from revision events", stop: "history"},

	{name: "lease grant", args: []string{"lease", "grant", "60"}},
	{name: "put with lease", args: []string{"put", "l/1", "x", "--lease=<lease-1>"}},   // 14
	{name: "put with lease 2", args: []string{"put", "l/2", "y", "--lease=<lease-1>"}}, // 15
	{name: "get with lease json", args: []string{"get", "l/1", "-w", "json"}},
	{name: "lease timetolive keys", args: []string{"lease", "timetolive", "<lease-1>", "--keys"}},
	{name: "lease keep-alive once", args: []string{"lease", "keep-alive", "--once", "<lease-1>"}},
	{name: "lease grant json", args: []string{"lease", "grant", "100", "-w", "json"}},
	{name: "lease list", args: []string{"lease", "list"}},
	{name: "lease list json", args: []string{"lease", "list", "-w", "json"}},
	{name: "lease revoke", args: []string{"lease", "revoke", "<lease-1>"}}, // 16
	{name: "get revoked lease keys", args: []string{"get", "--prefix", "l/", "-w", "json"}},
	{name: "lease timetolive revoked", args: []string{"lease", "timetolive", "<lease-1>"}},
	{name: "lease revoke revoked", args: []string{"lease", "revoke", "<lease-1>"}, fails: true},
	{name: "lease keep-alive revoked", args: []string{"lease", "keep-alive", "--once", "<lease-1>"}, fails: true},
	{name: "lease revoke 2", args: []string{"lease", "revoke", "<lease-2>"}},
	{name: "lease list empty", args: []string{"lease", "list"}},

	// A lock run around a command: lock (17), echo, unlock (18).
	{name: "lock exec", args: []string{"lock", "mylock", "--", "sh", "-c", `echo "$ETCD_LOCK_KEY held at $ETCD_LOCK_REV"`}},
	// One holder, one waiter; the waiter gets the lock when the holder is interrupted.
	{name: "lock hold", args: []string{"lock", "mylock"}, start: "holder", until: `mylock/\S+\n`}, // 19
	{name: "lock contend", args: []string{"lock", "mylock", "--", "sh", "-c", `echo "$ETCD_LOCK_KEY got it at $ETCD_LOCK_REV"`},
		start: "waiter", waitPrefix: "mylock/", waitKeys: 2}, // 20
	{name: "lock release", stop: "holder"},                                   // 21
	{name: "lock handed over", stop: "waiter", until: `got it`, exits: true}, // 22

	// An election: a leader, an observer, a second candidate that wins once the first resigns.
	{name: "elect campaign", args: []string{"elect", "myelection", "p1"}, start: "p1", until: `p1\n`}, // 23
	{name: "elect listen", args: []string{"elect", "-l", "myelection"}, start: "observer", until: `p1\n`},
	{name: "elect contend", args: []string{"elect", "myelection", "p2"}, start: "p2",
		waitPrefix: "myelection/", waitKeys: 2}, // 24
	{name: "elect resign", stop: "p1"},                        // 25
	{name: "elect observed", stop: "observer", until: `p2\n`}, //
	{name: "elect second leader", stop: "p2", until: `p2\n`},  // 26

	{name: "compaction", args: []string{"compaction", "5"}},
	{name: "get compacted revision", args: []string{"get", "foo", "--rev=3"}, fails: true},
	{name: "watch compacted revision", args: []string{"watch", "w/", "--rev=2"}, fails: true},

	{name: "member list", args: []string{"member", "list"}, compare: rowsShape(memberColumns, memberVariable...)},
	{name: "member list table", args: []string{"member", "list", "-w", "table"}, compare: tableShape(memberVariable...)},
	{name: "member list json", args: []string{"member", "list", "-w", "json"}, compare: jsonShape(
		"header.cluster_id", "header.member_id", "header.raft_term",
		"members[].ID", "members[].name", "members[].peerURLs[]", "members[].clientURLs[]")},
	{name: "endpoint status", args: []string{"endpoint", "status"}, compare: rowsShape(statusColumns, statusVariable...)},
	{name: "endpoint status table", args: []string{"endpoint", "status", "-w", "table"}, compare: tableShape(statusVariable...)},
	{name: "endpoint status json", args: []string{"endpoint", "status", "-w", "json"}, compare: jsonShape(
		"[].Status.header.cluster_id", "[].Status.header.member_id", "[].Status.header.raft_term",
		"[].Status.version", "[].Status.storageVersion", "[].Status.dbSize", "[].Status.dbSizeInUse",
		"[].Status.leader", "[].Status.raftIndex", "[].Status.raftTerm", "[].Status.raftAppliedIndex")},
	{name: "endpoint health", args: []string{"endpoint", "health"}},
	{name: "endpoint health json", args: []string{"endpoint", "health", "-w", "json"}, compare: jsonShape("[].took")},
	{name: "snapshot save", args: []string{"snapshot", "save", "<snapshot>"}, compare: snapshotShape},

	{name: "get all at end", args: []string{"get", "", "--prefix", "-w", "json"}},
}

// TestEtcdctl is the acceptance test of etcd compatibility: the real etcdctl runs the same
// command sequence against etcd and against ember, and the outputs must match.
func TestEtcdctl(t *testing.T) {
	bin := etcdctl(t)
	begin := time.Now()
	etcd := runSteps(t, bin, startEtcd(t), ctlSteps)
	t.Logf("etcd: %d steps in %v", len(ctlSteps), time.Since(begin).Round(time.Millisecond))
	begin = time.Now()
	ember := runSteps(t, bin, startEmber(t), ctlSteps)
	t.Logf("ember: %d steps in %v", len(ctlSteps), time.Since(begin).Round(time.Millisecond))

	for i, st := range ctlSteps {
		t.Run(st.name, func(t *testing.T) {
			// Background commands are running (-3) or were interrupted (-1); the comparison
			// checks those.
			if failed := etcd[i].exit != 0; st.start == "" && st.stop == "" && failed != st.fails {
				t.Fatalf("etcd itself: exit status %d, want failure %v: the sequence is wrong\n%s", etcd[i].exit, st.fails, etcd[i])
			}
			compare := st.compare
			if compare == nil {
				compare = sameOutput
			}
			if d := compare(etcd[i], ember[i]); d != "" {
				t.Errorf("%s: ember differs from etcd %s\netcd:\n%s\nember:\n%s", st.command(), d, etcd[i], ember[i])
			}
		})
	}
}

// runSteps runs the sequence against the deployment at endpoint and returns each step's
// normalized output.
func runSteps(t *testing.T, bin, endpoint string, steps []ctlStep) []normalized {
	t.Helper()
	n := newNormalizer()
	n.literals[endpoint] = "<endpoint>"
	snapshot := filepath.Join(t.TempDir(), "snapshot.db")
	n.literals[snapshot] = "<snapshot>"
	cli := newClient(t, endpoint)
	// Revisions are compared exactly, which takes both deployments starting from the same,
	// empty, state.
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	empty, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if empty.Count != 0 || empty.Header.Revision != 1 {
		t.Fatalf("%s: %d keys at revision %d, want an empty store at revision 1", endpoint, empty.Count, empty.Header.Revision)
	}
	bg := map[string]*bgCtl{}
	var out []normalized
	for _, st := range steps {
		r := runStep(t, bin, endpoint, st, n, bg, snapshot)
		if st.waitPrefix != "" && !waitKeys(cli, st.waitPrefix, st.waitKeys) {
			r.stderr += fmt.Sprintf("(test: %d keys under %s never appeared)\n", st.waitKeys, st.waitPrefix)
		}
		if slices.Contains(st.args, "<snapshot>") {
			if fi, err := os.Stat(snapshot); err != nil || fi.Size() == 0 {
				r.stderr += "(test: snapshot file missing or empty)\n"
			}
		}
		out = append(out, n.normalize(r))
	}
	return out
}

// runStep runs one step against endpoint; bg holds the background commands by name.
func runStep(t *testing.T, bin, endpoint string, st ctlStep, n *normalizer, bg map[string]*bgCtl, snapshot string) result {
	args := make([]string, len(st.args))
	for i, a := range st.args {
		a, err := n.expand(strings.ReplaceAll(a, "<snapshot>", snapshot))
		if err != nil {
			return result{stderr: fmt.Sprintf("(test: %v)\n", err), exit: -2}
		}
		args[i] = a
	}
	var until *regexp.Regexp
	if st.until != "" {
		until = regexp.MustCompile(st.until)
	}
	waitFor := func(b *bgCtl) string {
		if until != nil && !b.waitFor(until) {
			return fmt.Sprintf("(test: output never matched %q)\n", st.until)
		}
		return ""
	}
	switch {
	case st.start != "":
		b := startCtl(t, bin, endpoint, args, st.stdin)
		bg[st.start] = b
		note := waitFor(b)
		r := b.output()
		r.stderr += note
		return r
	case st.stop != "":
		b := bg[st.stop]
		note := waitFor(b)
		var r result
		if st.exits {
			r = b.wait()
		} else {
			r = b.stop()
		}
		r.stderr += note
		return r
	default:
		return runCtl(t, bin, endpoint, args, st.stdin)
	}
}

// waitKeys waits until there are n keys under prefix.
func waitKeys(cli *clientv3.Client, prefix string, n int64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	for {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}
