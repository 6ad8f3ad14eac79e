// Command ember-dump prints what the data dir of a stopped ember member holds: the raft log
// entries with their commands decoded, the metadata of the raft snapshots, and the keys at a
// revision, as text or JSON. It is ember's etcd-dump-logs and `etcdctl get "" --prefix -w json`.
//
// Usage:
//
//	ember-dump -dir DIR [-format text|json] [-logs] [-snapshot] [-keys]
//	           [-rev N] [-prefix P] [-from INDEX] [-to INDEX]
//
// With none of -logs, -snapshot and -keys it prints all three. A dir that a running member holds
// is refused. The keys are rebuilt from the newest snapshot and every log entry after it; a
// stopped dir does not record how far the log was committed, so the last entries may never have
// been committed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ember-kv/ember/internal/dump"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: ember-dump -dir DIR [flags]

Prints what the data dir of a stopped ember member holds: raft log entries with their
commands decoded (-logs), snapshot metadata (-snapshot), and the keys at a revision (-keys).
With none of the three, prints all of them. Keys are rebuilt from the newest snapshot and
every log entry after it, so entries at the tail of the log that were never committed may be
included.

Flags:
`

// run is main without the process: it returns the exit status, 0 on success, 1 when the dump
// fails and 2 for bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ember-dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var opts dump.Options
	dir := fs.String("dir", "", "data `dir` of a stopped member (required)")
	fs.StringVar(&opts.Format, "format", "text", "output `format`: text or json")
	fs.BoolVar(&opts.Logs, "logs", false, "print the raft log entries, commands decoded")
	fs.BoolVar(&opts.Snapshot, "snapshot", false, "print the metadata of the raft snapshots")
	fs.BoolVar(&opts.Keys, "keys", false, "print the keys, as etcdctl get -w json with -format json")
	fs.Int64Var(&opts.Revision, "rev", 0, "`revision` to print the keys at; 0 is the newest")
	fs.StringVar(&opts.Prefix, "prefix", "", "print only the keys with this `prefix`")
	fs.Uint64Var(&opts.From, "from", 0, "first log `index` to print; 0 is the first in the log")
	fs.Uint64Var(&opts.To, "to", 0, "last log `index` to print; 0 is the last in the log")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if msg := checkUsage(fs, *dir, opts); msg != "" {
		fmt.Fprintf(stderr, "ember-dump: %s\n", msg)
		fs.Usage()
		return 2
	}
	if err := dump.Run(stdout, *dir, opts); err != nil {
		fmt.Fprintf(stderr, "ember-dump: %v\n", err)
		return 1
	}
	return 0
}

// checkUsage refuses flags that would be silently ignored: -rev and -prefix when the keys are
// not printed, -from and -to when the log is not.
func checkUsage(fs *flag.FlagSet, dir string, opts dump.Options) string {
	if dir == "" {
		return "-dir is required"
	}
	if fs.NArg() > 0 {
		return fmt.Sprintf("unexpected arguments %q", fs.Args())
	}
	all := !opts.Logs && !opts.Snapshot && !opts.Keys
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"rev", "prefix"} {
		if set[name] && !all && !opts.Keys {
			return fmt.Sprintf("-%s applies to -keys", name)
		}
	}
	for _, name := range []string{"from", "to"} {
		if set[name] && !all && !opts.Logs {
			return fmt.Sprintf("-%s applies to -logs", name)
		}
	}
	return ""
}
