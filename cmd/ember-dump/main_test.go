package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

// stoppedDir returns the data dir of a stopped member that wrote k1, k2 and other, and took a
// raft snapshot along the way.
func stoppedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := ember.Open(dir, ember.WithSnapshotThreshold(1), ember.WithSnapshotInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, kv := range [][2]string{{"k1", "v1"}, {"k2", "v2"}, {"other", "x"}} {
		if _, err := s.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	for {
		if metas, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "meta.json")); len(metas) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no raft snapshot was taken")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestDumpCommand(t *testing.T) {
	dir := stoppedDir(t)

	t.Run("everything as text", func(t *testing.T) {
		code, out, errOut := runCmd("-dir", dir)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{"snapshots (", "log entries 1..", " put k1=v1\n", `keys with prefix "" at revision 4`,
			"  k2=v2 create_revision=3 mod_revision=3 version=1 lease=0\n", "count=3\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("keys as json", func(t *testing.T) {
		code, out, errOut := runCmd("-dir", dir, "-format", "json", "-keys", "-prefix", "k")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var doc struct {
			Keys struct {
				Header struct{ Revision int64 }
				Kvs    []struct {
					Key, Value  []byte
					ModRevision int64 `json:"mod_revision"`
				}
				Count int64
			}
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		k := doc.Keys
		if k.Header.Revision != 4 || k.Count != 2 || len(k.Kvs) != 2 ||
			string(k.Kvs[0].Key) != "k1" || string(k.Kvs[0].Value) != "v1" || k.Kvs[0].ModRevision != 2 ||
			string(k.Kvs[1].Key) != "k2" || string(k.Kvs[1].Value) != "v2" {
			t.Errorf("keys = %+v\n%s", k, out)
		}
	})

	t.Run("log range and old revision", func(t *testing.T) {
		code, out, errOut := runCmd("-dir", dir, "-logs", "-from", "1", "-to", "1")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 ||
			!strings.HasPrefix(lines[1], "  index=1 term=1 type=LogConfiguration") {
			t.Errorf("output:\n%s", out)
		}
		code, out, errOut = runCmd("-dir", dir, "-keys", "-rev", "2")
		if code != 0 || !strings.Contains(out, "  k1=v1 ") || strings.Contains(out, "k2=") {
			t.Errorf("keys at revision 2: exit %d\n%s%s", code, out, errOut)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
			msg  string
		}{
			{nil, 2, "-dir is required"},
			{[]string{"-dir", dir, "extra"}, 2, "unexpected arguments"},
			{[]string{"-dir", dir, "-logs", "-rev", "2"}, 2, "-rev applies to -keys"},
			{[]string{"-dir", dir, "-keys", "-to", "2"}, 2, "-to applies to -logs"},
			{[]string{"-dir", dir, "-nosuchflag"}, 2, "flag provided but not defined"},
			{[]string{"-dir", dir, "-format", "yaml"}, 1, `unknown format "yaml"`},
			{[]string{"-dir", dir, "-keys", "-rev", "99"}, 1, "future revision"},
			{[]string{"-dir", filepath.Join(dir, "nope")}, 1, "not an ember data dir"},
		} {
			code, out, errOut := runCmd(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.msg)
			}
			if tc.code == 2 && !strings.Contains(errOut, "Usage: ember-dump") {
				t.Errorf("%q: no usage text:\n%s", tc.args, errOut)
			}
			if tc.code == 1 && out != "" {
				t.Errorf("%q: failed, yet printed %q", tc.args, out)
			}
		}
	})

	t.Run("help", func(t *testing.T) {
		code, _, errOut := runCmd("-h")
		if code != 0 || !strings.Contains(errOut, "Usage: ember-dump -dir DIR") || !strings.Contains(errOut, "-prefix prefix") {
			t.Errorf("-h: exit %d\n%s", code, errOut)
		}
	})
}

func TestDumpCommandRunningMember(t *testing.T) {
	dir := t.TempDir()
	s, err := ember.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	code, _, errOut := runCmd("-dir", dir)
	if code != 1 || !strings.Contains(errOut, "in use") {
		t.Errorf("exit %d, stderr %q; want 1 and an in-use error", code, errOut)
	}
}
