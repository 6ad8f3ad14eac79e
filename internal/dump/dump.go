// Package dump prints what the data dir of a stopped member holds, for cmd/ember-dump: the
// raft log entries with their commands decoded, the snapshots' metadata, and the keys at a
// revision, as etcd-dump-logs and `etcdctl get -w json` do for etcd.
package dump

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/raftlog"
	"github.com/ember-kv/ember/internal/wire"
)

// Options selects what Run prints. With none of Logs, Snapshot and Keys set, Run prints all
// three.
type Options struct {
	// Format is "text" (the default) or "json".
	Format string
	// Logs prints the raft log entries, with the commands they carry decoded.
	Logs bool
	// Snapshot prints the metadata of the raft snapshots in the dir, newest first.
	Snapshot bool
	// Keys prints the keys live at Revision under Prefix.
	Keys bool
	// Revision is the revision Keys reads at; 0 means the newest.
	Revision int64
	// Prefix limits Keys to the keys that start with it; "" means every key.
	Prefix string
	// From and To bound the indexes of the log entries Logs prints, both inclusive; 0 leaves
	// that end open.
	From, To uint64
}

// Run prints what the data dir of a stopped member holds, as etcd-dump-logs and
// `etcdctl get "" --prefix -w json` do for etcd: the raft log entries with their commands
// decoded, the metadata of the snapshots, and the keys at a revision.
//
// Keys are rebuilt the way a restarting member rebuilds its state: from the newest snapshot,
// then every command in the log after it. A stopped dir does not record how far the log was
// committed, so commands at the tail of the log that were never committed may be included, just
// as etcd-dump-logs prints every entry of the WAL. Where a restarting member would fall back to
// an older snapshot when the newest is damaged, Dump reports the damage.
//
// Dump never writes to a bbolt raft log. A LogStoreWAL log is opened as a member's open would:
// every segment is verified (damage gives ember.ErrCorrupt), a torn last write is cut (overwritten
// with zeros) and segment files its metadata no longer lists are deleted. Reading snapshots goes through raft's snapshot store, which
// creates dir/snapshots if it is missing and probes it with a file it removes at once.
//
// Errors: a dir that a running member holds gives an error saying it is in use, after about a
// second; a damaged snapshot or log gives an error wrapping ember.ErrCorrupt; a compacted or future
// Revision gives ember.ErrCompacted or ember.ErrFutureRev.
//
// Text output has one line per snapshot, entry and key; keys and values are printed as they
// are when they are printable and unambiguous, and Go-quoted otherwise. JSON output is a single
// object whose fields are "warnings", "snapshots", "entries" (streamed, one per line) and "keys",
// each present only when selected; "keys" has the shape of `etcdctl get -w json`, keys and
// values in base64.
func Run(w io.Writer, dir string, opts Options) error {
	var out dumpOutput
	bw := bufio.NewWriterSize(w, 64<<10)
	switch opts.Format {
	case "", "text":
		out = &textDump{w: bw}
	case "json":
		out = &jsonDump{w: bw}
	default:
		return fmt.Errorf("ember: dump: unknown format %q (want text or json)", opts.Format)
	}
	if opts.Revision < 0 {
		return fmt.Errorf("ember: dump: negative revision %d", opts.Revision)
	}
	if opts.To != 0 && opts.From > opts.To {
		return fmt.Errorf("ember: dump: log range %d..%d is empty", opts.From, opts.To)
	}
	if !opts.Logs && !opts.Snapshot && !opts.Keys {
		opts.Logs, opts.Snapshot, opts.Keys = true, true, true
	}

	logs, closeLogs, err := openDumpLog(dir)
	if err != nil {
		return err
	}
	defer closeLogs()

	d := &dumper{dir: dir, opts: opts, out: out, logs: logs}
	defer func() {
		if d.backend != nil {
			d.backend.Close()
		}
	}()
	if err := d.run(); err != nil {
		return err
	}
	return out.finish()
}

// openDumpLog opens the raft log for reading, a bbolt one read-only (raftlog.OpenReadOnly).
func openDumpLog(dir string) (raft.LogStore, func() error, error) {
	l, err := raftlog.OpenReadOnly(dir)
	if err != nil {
		return nil, nil, err
	}
	return l.Logs, l.Close, nil
}

type dumper struct {
	dir  string
	opts Options
	out  dumpOutput
	logs raft.LogStore

	// Set when Keys is on: the state being rebuilt and where the replay starts.
	backend   *mvcc.Backend // the member's, read-only; nil before it had one
	replay    *mvcc.Applier
	snapIndex uint64
	lastTerm  uint64
}

func (d *dumper) run() error {
	if d.opts.Snapshot || d.opts.Keys {
		if err := d.snapshots(); err != nil {
			return err
		}
	}
	if d.opts.Logs || d.opts.Keys {
		if err := d.entries(); err != nil {
			return err
		}
	}
	if d.opts.Keys {
		return d.keys()
	}
	return nil
}

// snapshots lists the snapshots and, for Keys, loads the newest.
func (d *dumper) snapshots() error {
	// raft's store only logs the snapshots it skips (unreadable metadata, unfinished ones); they
	// are reported, since the member would skip them too and restore an older state.
	var warnings bytes.Buffer
	store, err := raft.NewFileSnapshotStoreWithLogger(d.dir, math.MaxInt, hclog.New(&hclog.LoggerOptions{
		Output: &warnings, Level: hclog.Warn, DisableTime: true,
	}))
	if err != nil {
		return fmt.Errorf("ember: dump: open snapshot store: %w", err)
	}
	metas, err := store.List()
	if err != nil {
		return fmt.Errorf("ember: dump: list snapshots: %w", err)
	}
	var lines []string
	for line := range strings.Lines(warnings.String()) {
		lines = append(lines, strings.TrimSpace(line))
	}
	if len(lines) > 0 {
		if err := d.out.warnings(lines); err != nil {
			return err
		}
	}
	if d.opts.Snapshot {
		snaps := make([]dumpSnapshot, len(metas))
		for i, m := range metas {
			snaps[i] = dumpSnapshot{ID: m.ID, Index: m.Index, Term: m.Term, Size: m.Size,
				ConfigurationIndex: m.ConfigurationIndex, Members: dumpMembers(m.Configuration)}
		}
		if err := d.out.snapshots(snaps); err != nil {
			return err
		}
	}
	if !d.opts.Keys {
		return nil
	}
	// The state is in the backend (state.db) from the index it was committed at, or, for a dir
	// restored from a backup or written by an earlier version, in the newest snapshot.
	st := mvcc.New()
	if err := d.loadBackend(&st); err != nil {
		return err
	}
	if len(metas) > 0 {
		newest := metas[0]
		if newest.Index > d.snapIndex {
			if st, err = loadDumpSnapshot(store, newest.ID); err != nil {
				return err
			}
			d.snapIndex = newest.Index
		}
		d.lastTerm = newest.Term
	}
	d.replay = mvcc.NewApplier(hclog.NewNullLogger(), replayDedupBudget)
	d.replay.SetState(st) // as fsm.Restore does, so that request IDs expire on schedule
	return nil
}

func loadDumpSnapshot(store *raft.FileSnapshotStore, id string) (*mvcc.State, error) {
	_, rc, err := store.Open(id)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("ember: dump: snapshot %s: %w", id, err)
		}
		// Everything else raft checks (metadata, checksum) failing means damage.
		return nil, fmt.Errorf("%w: snapshot %s: %v", ember.ErrCorrupt, id, err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	if magic, _ := br.Peek(len(markerMagic)); string(magic) == markerMagic {
		return nil, fmt.Errorf("%w: snapshot %s holds no state and the backend (state.db) is behind it", ember.ErrCorrupt, id)
	}
	st, _, err := mvcc.RestoreToMemory(br)
	if err != nil {
		return nil, fmt.Errorf("ember: dump: snapshot %s: %w", id, err)
	}
	return st, nil
}

// markerMagic starts a raft snapshot that only marks the index the backend was committed at
// (the root package's markerSnapshot).
const markerMagic = "EMBERMK1"

// loadBackend loads the member's backend into *st, if the dir has one, and sets where the
// replay starts. The backend stays open (read-only) until Run ends.
func (d *dumper) loadBackend(st **mvcc.State) error {
	path := filepath.Join(d.dir, "state.db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	b, err := mvcc.OpenBackendReadOnly(path)
	if err != nil {
		return fmt.Errorf("ember: dump: %w (is the member running?)", err)
	}
	loaded, applied, err := mvcc.Load(b)
	if err != nil {
		b.Close()
		return fmt.Errorf("ember: dump: %w", err)
	}
	d.backend = b
	*st, d.snapIndex = loaded, applied
	return nil
}

// entries walks the log once: it prints the entries asked for and replays those after the
// snapshot into the state Keys prints.
func (d *dumper) entries() error {
	first, err := d.logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("ember: dump: read raft log: %w", err)
	}
	last, err := d.logs.LastIndex()
	if err != nil {
		return fmt.Errorf("ember: dump: read raft log: %w", err)
	}
	if d.opts.Keys && last > d.snapIndex && first > d.snapIndex+1 {
		return fmt.Errorf("%w: raft log starts at index %d but the newest snapshot ends at %d: the entries in between are missing",
			ember.ErrCorrupt, first, d.snapIndex)
	}
	if d.opts.Logs {
		if err := d.out.beginEntries(first, last); err != nil {
			return err
		}
	}
	for i := first; first > 0 && i <= last; i++ {
		show := d.opts.Logs && i >= d.opts.From && (d.opts.To == 0 || i <= d.opts.To)
		replay := d.opts.Keys && i > d.snapIndex
		if !show && !replay {
			continue
		}
		var l raft.Log
		if err := d.logs.GetLog(i, &l); err != nil {
			return fmt.Errorf("%w: raft log entry %d: %v", ember.ErrCorrupt, i, err)
		}
		if show {
			if err := d.out.entry(describeEntry(&l)); err != nil {
				return err
			}
		}
		if replay {
			d.lastTerm = l.Term
			if l.Type == raft.LogCommand {
				if _, err := d.replay.Apply(l.Index, l.Data); err != nil {
					// The member would stop here; the keys after it are unknown.
					return fmt.Errorf("%w: raft log entry %d: %w", ember.ErrCorrupt, i, err)
				}
			}
		}
	}
	return nil
}

func (d *dumper) keys() error {
	st := d.replay.State()
	rev, code := st.CheckRev(d.opts.Revision)
	if err := revisionError(code); err != nil {
		return fmt.Errorf("ember: dump: revision %d (store revision %d, compacted at %d): %w",
			d.opts.Revision, st.Rev(), st.CompactRev(), err)
	}
	memberID, err := os.ReadFile(filepath.Join(d.dir, "member-id"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ember: dump: read member ID: %w", err)
	}
	kv := dumpKeyView{
		resp: dumpKeys{Header: dumpHeader{MemberID: strings.TrimSpace(string(memberID)),
			Revision: st.Rev(), RaftTerm: d.lastTerm}},
		revision: rev, compactRevision: st.CompactRev(), prefix: d.opts.Prefix,
	}
	key := []byte(d.opts.Prefix)
	st.Scan(mvcc.NewKeyRange(key, mvcc.PrefixEnd(key)), rev, func(r *mvcc.Record) bool {
		value, _ := st.Value(r) // the replayed state holds every value in memory
		kv.resp.Kvs = append(kv.resp.Kvs, dumpKV{Key: []byte(r.Key), CreateRevision: r.Create,
			ModRevision: r.Mod, Version: r.Version, Value: []byte(value), Lease: r.Lease})
		return true
	})
	kv.resp.Count = int64(len(kv.resp.Kvs))
	return d.out.keys(&kv)
}

// The JSON shapes. Keys and values are []byte, so encoding/json writes them in base64 as etcd
// does, and any byte string survives the round trip.

type dumpSnapshot struct {
	ID                 string       `json:"id"`
	Index              uint64       `json:"index"`
	Term               uint64       `json:"term"`
	Size               int64        `json:"size"`
	ConfigurationIndex uint64       `json:"configuration_index"`
	Members            []dumpMember `json:"members"`
}

type dumpMember struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"` // Voter, Nonvoter (a learner), Staging
}

func dumpMembers(c raft.Configuration) []dumpMember {
	ms := make([]dumpMember, len(c.Servers))
	for i, s := range c.Servers {
		ms[i] = dumpMember{ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String()}
	}
	return ms
}

type dumpEntry struct {
	Index   uint64       `json:"index"`
	Term    uint64       `json:"term"`
	Type    string       `json:"type"`              // raft's LogType name: LogCommand, LogConfiguration, LogNoop...
	Command *dumpCommand `json:"command,omitempty"` // LogCommand
	Members []dumpMember `json:"members,omitempty"` // LogConfiguration
	Error   string       `json:"error,omitempty"`   // the data could not be decoded
}

type dumpCommand struct {
	Kind        string           `json:"kind"`
	RequestID   string           `json:"request_id,omitempty"` // client (hex) "-" sequence
	RetryFloor  uint64           `json:"retry_floor,omitempty"`
	Txn         *dumpTxn         `json:"txn,omitempty"`
	Revision    int64            `json:"revision,omitempty"` // compact
	Lease       int64            `json:"lease,omitempty"`    // lease-grant, lease-revoke
	TTL         int64            `json:"ttl,omitempty"`      // lease-grant
	Checkpoints []dumpCheckpoint `json:"checkpoints,omitempty"`
	Term        uint64           `json:"term,omitempty"`         // leader-start
	Node        string           `json:"node,omitempty"`         // leader-start; alarm: the member
	AlarmAction string           `json:"alarm_action,omitempty"` // alarm: ACTIVATE or DEACTIVATE
	Alarm       string           `json:"alarm,omitempty"`        // alarm: NOSPACE or CORRUPT
}

type dumpCheckpoint struct {
	Lease       int64 `json:"lease"`
	RemainingMs int64 `json:"remaining_ms"`
}

// dumpTxn and the types below follow the field names of etcd's TxnRequest in JSON.
type dumpTxn struct {
	Compare []dumpCompare `json:"compare,omitempty"`
	Success []dumpOp      `json:"success,omitempty"`
	Failure []dumpOp      `json:"failure,omitempty"`
}

type dumpCompare struct {
	Target         string `json:"target"` // VERSION, CREATE, MOD, VALUE, LEASE
	Result         string `json:"result"` // EQUAL, GREATER, LESS, NOT_EQUAL
	Key            []byte `json:"key"`
	RangeEnd       []byte `json:"range_end,omitempty"`
	Version        *int64 `json:"version,omitempty"` // pointers: comparing with 0 is common
	CreateRevision *int64 `json:"create_revision,omitempty"`
	ModRevision    *int64 `json:"mod_revision,omitempty"`
	Lease          *int64 `json:"lease,omitempty"`
	Value          []byte `json:"value,omitempty"`
}

type dumpOp struct {
	Type              string   `json:"type"` // range, put, delete, txn
	Key               []byte   `json:"key,omitempty"`
	RangeEnd          []byte   `json:"range_end,omitempty"`
	Value             []byte   `json:"value,omitempty"`
	Lease             int64    `json:"lease,omitempty"`
	PrevKV            bool     `json:"prev_kv,omitempty"`
	IgnoreValue       bool     `json:"ignore_value,omitempty"`
	IgnoreLease       bool     `json:"ignore_lease,omitempty"`
	Revision          int64    `json:"revision,omitempty"`
	Limit             int64    `json:"limit,omitempty"`
	SortOrder         uint8    `json:"sort_order,omitempty"`
	SortTarget        uint8    `json:"sort_target,omitempty"`
	Serializable      bool     `json:"serializable,omitempty"`
	KeysOnly          bool     `json:"keys_only,omitempty"`
	CountOnly         bool     `json:"count_only,omitempty"`
	MinModRevision    int64    `json:"min_mod_revision,omitempty"`
	MaxModRevision    int64    `json:"max_mod_revision,omitempty"`
	MinCreateRevision int64    `json:"min_create_revision,omitempty"`
	MaxCreateRevision int64    `json:"max_create_revision,omitempty"`
	Txn               *dumpTxn `json:"txn,omitempty"`
}

// dumpKeys is the shape of `etcdctl get -w json`, zero fields omitted as etcd omits them.
type dumpKeys struct {
	Header dumpHeader `json:"header"`
	Kvs    []dumpKV   `json:"kvs,omitempty"`
	Count  int64      `json:"count,omitempty"`
}

// dumpHeader is etcd's response header: Revision is the store's revision whatever revision the
// keys were read at; RaftTerm is the term of the last entry replayed.
type dumpHeader struct {
	MemberID string `json:"member_id,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	RaftTerm uint64 `json:"raft_term,omitempty"`
}

type dumpKV struct {
	Key            []byte `json:"key,omitempty"`
	CreateRevision int64  `json:"create_revision,omitempty"`
	ModRevision    int64  `json:"mod_revision,omitempty"`
	Version        int64  `json:"version,omitempty"`
	Value          []byte `json:"value,omitempty"`
	Lease          int64  `json:"lease,omitempty"`
}

// dumpKeyView is what the text output says about the keys beyond etcd's JSON shape.
type dumpKeyView struct {
	resp            dumpKeys
	revision        int64
	compactRevision int64
	prefix          string
}

func describeEntry(l *raft.Log) *dumpEntry {
	e := &dumpEntry{Index: l.Index, Term: l.Term, Type: l.Type.String()}
	switch l.Type {
	case raft.LogCommand:
		cmd, err := wire.UnmarshalCommand(l.Data)
		if err != nil {
			e.Error = err.Error()
			break
		}
		e.Command = describeCommand(cmd)
	case raft.LogConfiguration:
		c, err := decodeConfiguration(l.Data)
		if err != nil {
			e.Error = err.Error()
			break
		}
		e.Members = dumpMembers(c)
	}
	return e
}

// decodeConfiguration wraps raft.DecodeConfiguration, which panics on bad input; a dump reports
// a damaged entry and goes on.
func decodeConfiguration(b []byte) (c raft.Configuration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return raft.DecodeConfiguration(b), nil
}

var dumpKinds = map[wire.Kind]string{
	wire.KindTxn:             "txn",
	wire.KindCompact:         "compact",
	wire.KindLeaseGrant:      "lease-grant",
	wire.KindLeaseRevoke:     "lease-revoke",
	wire.KindLeaseCheckpoint: "lease-checkpoint",
	wire.KindLeaderStart:     "leader-start",
	wire.KindAlarm:           "alarm",
	wire.KindAuth:            "auth", // what changed is not shown: a password hash stays out of dumps
}

// Names as etcd's AlarmRequest.
var (
	dumpAlarmActions = map[uint8]string{wire.AlarmActivate: "ACTIVATE", wire.AlarmDeactivate: "DEACTIVATE"}
	dumpAlarmTypes   = map[uint8]string{wire.AlarmNoSpace: "NOSPACE", wire.AlarmCorrupt: "CORRUPT"}
)

func describeCommand(cmd *wire.Command) *dumpCommand {
	c := &dumpCommand{Kind: dumpKinds[cmd.Kind], RetryFloor: cmd.RetryFloor}
	if !cmd.ID.IsZero() {
		c.RequestID = fmt.Sprintf("%x-%d", cmd.ID.Client, cmd.ID.Seq)
	}
	switch cmd.Kind {
	case wire.KindTxn:
		c.Txn = describeTxn(cmd.Txn)
	case wire.KindCompact:
		c.Revision = cmd.Revision
	case wire.KindLeaseGrant:
		c.Lease, c.TTL = cmd.LeaseID, cmd.LeaseTTL
	case wire.KindLeaseRevoke:
		c.Lease = cmd.LeaseID
	case wire.KindLeaseCheckpoint:
		for _, cp := range cmd.Checkpoints {
			c.Checkpoints = append(c.Checkpoints, dumpCheckpoint{Lease: cp.ID, RemainingMs: cp.RemainingMs})
		}
	case wire.KindLeaderStart:
		c.Term, c.Node = cmd.Term, cmd.NodeID
	case wire.KindAlarm:
		c.Node, c.AlarmAction, c.Alarm = cmd.NodeID, dumpAlarmActions[cmd.AlarmAction], dumpAlarmTypes[cmd.AlarmType]
	}
	return c
}

var (
	dumpTargets = map[wire.CompareTarget]string{wire.TargetVersion: "VERSION", wire.TargetCreate: "CREATE",
		wire.TargetMod: "MOD", wire.TargetValue: "VALUE", wire.TargetLease: "LEASE"}
	dumpResults = map[wire.CompareResult]string{wire.CompareEqual: "EQUAL", wire.CompareGreater: "GREATER",
		wire.CompareLess: "LESS", wire.CompareNotEqual: "NOT_EQUAL"}
	dumpResultSymbols = map[string]string{"EQUAL": "=", "GREATER": ">", "LESS": "<", "NOT_EQUAL": "!="}
	dumpOpTypes       = map[wire.OpKind]string{wire.OpRange: "range", wire.OpPut: "put", wire.OpDelete: "delete",
		wire.OpTxn: "txn"}
)

// describeTxn returns nil for nil, the Txn of every op but an OpTxn.
func describeTxn(t *wire.Txn) *dumpTxn {
	if t == nil {
		return nil
	}
	dt := &dumpTxn{}
	for _, c := range t.Compares {
		dc := dumpCompare{Target: dumpTargets[c.Target], Result: dumpResults[c.Result], Key: c.Key, RangeEnd: c.End}
		n := c.Int
		switch c.Target {
		case wire.TargetVersion:
			dc.Version = &n
		case wire.TargetCreate:
			dc.CreateRevision = &n
		case wire.TargetMod:
			dc.ModRevision = &n
		case wire.TargetLease:
			dc.Lease = &n
		case wire.TargetValue:
			dc.Value = c.Value
		}
		dt.Compare = append(dt.Compare, dc)
	}
	dt.Success = describeOps(t.Success)
	dt.Failure = describeOps(t.Failure)
	return dt
}

func describeOps(ops []wire.Op) []dumpOp {
	var out []dumpOp
	for _, op := range ops {
		out = append(out, dumpOp{
			Type: dumpOpTypes[op.Kind], Key: op.Key, RangeEnd: op.End, Value: op.Value, Lease: op.Lease,
			PrevKV: op.PrevKV, IgnoreValue: op.IgnoreValue, IgnoreLease: op.IgnoreLease,
			Revision: op.Revision, Limit: op.Limit, SortOrder: op.SortOrder, SortTarget: op.SortTarget,
			Serializable: op.Serializable, KeysOnly: op.KeysOnly, CountOnly: op.CountOnly,
			MinModRevision: op.MinModRev, MaxModRevision: op.MaxModRev,
			MinCreateRevision: op.MinCreateRev, MaxCreateRevision: op.MaxCreateRev,
			Txn: describeTxn(op.Txn),
		})
	}
	return out
}

// dumpOutput renders what Dump finds, in the order Dump finds it.
type dumpOutput interface {
	warnings(lines []string) error
	snapshots(snaps []dumpSnapshot) error
	beginEntries(first, last uint64) error
	entry(e *dumpEntry) error
	keys(kv *dumpKeyView) error
	finish() error
}

// jsonDump writes one JSON object, streaming the entries so that a long log is never held in
// memory.
type jsonDump struct {
	w         *bufio.Writer
	fields    int  // top-level fields begun
	inEntries bool // the "entries" array is open
	entries   int  // entries written to it
}

func (j *jsonDump) field(name string, v any) error {
	if err := j.endEntries(); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := j.begin(name); err != nil {
		return err
	}
	_, err = j.w.Write(b)
	return err
}

func (j *jsonDump) begin(name string) error {
	sep := ","
	if j.fields == 0 {
		sep = "{"
	}
	j.fields++
	_, err := fmt.Fprintf(j.w, "%s\n%q:", sep, name)
	return err
}

func (j *jsonDump) endEntries() error {
	if !j.inEntries {
		return nil
	}
	j.inEntries = false
	_, err := j.w.WriteString("\n]")
	return err
}

func (j *jsonDump) warnings(lines []string) error        { return j.field("warnings", lines) }
func (j *jsonDump) snapshots(snaps []dumpSnapshot) error { return j.field("snapshots", snaps) }
func (j *jsonDump) keys(kv *dumpKeyView) error           { return j.field("keys", kv.resp) }

func (j *jsonDump) beginEntries(first, last uint64) error {
	if err := j.begin("entries"); err != nil {
		return err
	}
	j.inEntries = true
	_, err := j.w.WriteString("[")
	return err
}

func (j *jsonDump) entry(e *dumpEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	sep := ",\n"
	if j.entries == 0 {
		sep = "\n"
	}
	j.entries++
	if _, err := j.w.WriteString(sep); err != nil {
		return err
	}
	_, err = j.w.Write(b)
	return err
}

func (j *jsonDump) finish() error {
	if err := j.endEntries(); err != nil {
		return err
	}
	end := "}\n"
	if j.fields == 0 {
		end = "{}\n"
	}
	if _, err := j.w.WriteString(end); err != nil {
		return err
	}
	return j.w.Flush()
}

// textDump writes one line per item, for people and grep.
type textDump struct {
	w *bufio.Writer
}

func (t *textDump) warnings(lines []string) error {
	for _, l := range lines {
		if _, err := fmt.Fprintf(t.w, "warning: %s\n", l); err != nil {
			return err
		}
	}
	return nil
}

func (t *textDump) snapshots(snaps []dumpSnapshot) error {
	if _, err := fmt.Fprintf(t.w, "snapshots (%d, newest first):\n", len(snaps)); err != nil {
		return err
	}
	for _, s := range snaps {
		_, err := fmt.Fprintf(t.w, "  id=%s index=%d term=%d size=%d configuration_index=%d members=%s\n",
			s.ID, s.Index, s.Term, s.Size, s.ConfigurationIndex, membersText(s.Members))
		if err != nil {
			return err
		}
	}
	return nil
}

func membersText(ms []dumpMember) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s@%s(%s)", m.ID, m.Address, m.Suffrage)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func (t *textDump) beginEntries(first, last uint64) error {
	if first == 0 {
		_, err := fmt.Fprintln(t.w, "log entries: none")
		return err
	}
	_, err := fmt.Fprintf(t.w, "log entries %d..%d (entries at the tail may not have been committed):\n", first, last)
	return err
}

func (t *textDump) entry(e *dumpEntry) error {
	var b strings.Builder
	fmt.Fprintf(&b, "  index=%d term=%d type=%s", e.Index, e.Term, e.Type)
	switch {
	case e.Error != "":
		fmt.Fprintf(&b, " error=%s", strconv.Quote(e.Error))
	case e.Command != nil:
		commandText(&b, e.Command)
	case e.Members != nil:
		fmt.Fprintf(&b, " members=%s", membersText(e.Members))
	}
	b.WriteByte('\n')
	_, err := t.w.WriteString(b.String())
	return err
}

func commandText(b *strings.Builder, c *dumpCommand) {
	fmt.Fprintf(b, " kind=%s", c.Kind)
	if c.RequestID != "" {
		fmt.Fprintf(b, " id=%s", c.RequestID)
	}
	if c.RetryFloor != 0 {
		fmt.Fprintf(b, " retry_floor=%d", c.RetryFloor)
	}
	switch c.Kind {
	case "txn":
		b.WriteByte(' ')
		txnText(b, c.Txn)
	case "compact":
		fmt.Fprintf(b, " revision=%d", c.Revision)
	case "lease-grant":
		fmt.Fprintf(b, " lease=%d ttl=%d", c.Lease, c.TTL)
	case "lease-revoke":
		fmt.Fprintf(b, " lease=%d", c.Lease)
	case "lease-checkpoint":
		for _, cp := range c.Checkpoints {
			fmt.Fprintf(b, " lease=%d remaining_ms=%d", cp.Lease, cp.RemainingMs)
		}
	case "leader-start":
		fmt.Fprintf(b, " term=%d node=%s", c.Term, c.Node)
	case "alarm":
		fmt.Fprintf(b, " action=%s alarm=%s node=%s", c.AlarmAction, c.Alarm, c.Node)
	}
}

// txnText writes a Put or Delete (a txn of one op) as that op, and a real txn as
// "if [compares] then [ops] else [ops]".
func txnText(b *strings.Builder, t *dumpTxn) {
	if len(t.Compare) == 0 && len(t.Failure) == 0 && len(t.Success) == 1 {
		opText(b, &t.Success[0])
		return
	}
	b.WriteString("if [")
	for i := range t.Compare {
		if i > 0 {
			b.WriteString(", ")
		}
		compareText(b, &t.Compare[i])
	}
	b.WriteString("] then [")
	opsText(b, t.Success)
	b.WriteString("] else [")
	opsText(b, t.Failure)
	b.WriteString("]")
}

func opsText(b *strings.Builder, ops []dumpOp) {
	for i := range ops {
		if i > 0 {
			b.WriteString(", ")
		}
		opText(b, &ops[i])
	}
}

func compareText(b *strings.Builder, c *dumpCompare) {
	fmt.Fprintf(b, "%s(%s", strings.ToLower(c.Target), bytesText(c.Key))
	if c.RangeEnd != nil {
		fmt.Fprintf(b, " range_end=%s", bytesText(c.RangeEnd))
	}
	fmt.Fprintf(b, ") %s ", dumpResultSymbols[c.Result])
	for _, n := range []*int64{c.Version, c.CreateRevision, c.ModRevision, c.Lease} {
		if n != nil {
			b.WriteString(strconv.FormatInt(*n, 10))
			return
		}
	}
	b.WriteString(bytesText(c.Value))
}

func opText(b *strings.Builder, op *dumpOp) {
	b.WriteString(op.Type)
	if op.Type == "txn" {
		b.WriteString(" (")
		txnText(b, op.Txn)
		b.WriteString(")")
		return
	}
	b.WriteByte(' ')
	b.WriteString(bytesText(op.Key))
	if op.Type == "put" {
		b.WriteByte('=')
		b.WriteString(bytesText(op.Value))
	}
	if op.RangeEnd != nil {
		fmt.Fprintf(b, " range_end=%s", bytesText(op.RangeEnd))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"lease", op.Lease}, {"revision", op.Revision}, {"limit", op.Limit},
		{"sort_order", int64(op.SortOrder)}, {"sort_target", int64(op.SortTarget)},
		{"min_mod_revision", op.MinModRevision}, {"max_mod_revision", op.MaxModRevision},
		{"min_create_revision", op.MinCreateRevision}, {"max_create_revision", op.MaxCreateRevision},
	} {
		if f.v != 0 {
			fmt.Fprintf(b, " %s=%d", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		on   bool
	}{
		{"prev_kv", op.PrevKV}, {"ignore_value", op.IgnoreValue}, {"ignore_lease", op.IgnoreLease},
		{"serializable", op.Serializable}, {"keys_only", op.KeysOnly}, {"count_only", op.CountOnly},
	} {
		if f.on {
			b.WriteString(" " + f.name)
		}
	}
}

func (t *textDump) keys(kv *dumpKeyView) error {
	h := kv.resp.Header
	_, err := fmt.Fprintf(t.w, "keys with prefix %s at revision %d (store revision %d, compacted at %d, member %s, raft term %d):\n",
		strconv.Quote(kv.prefix), kv.revision, h.Revision, kv.compactRevision, h.MemberID, h.RaftTerm)
	if err != nil {
		return err
	}
	for _, k := range kv.resp.Kvs {
		_, err := fmt.Fprintf(t.w, "  %s=%s create_revision=%d mod_revision=%d version=%d lease=%d\n",
			bytesText(k.Key), bytesText(k.Value), k.CreateRevision, k.ModRevision, k.Version, k.Lease)
		if err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(t.w, "count=%d\n", kv.resp.Count)
	return err
}

func (t *textDump) finish() error { return t.w.Flush() }

// bytesText prints a key or value bare when that is unambiguous in a text line (printable, no
// spaces, no characters the line format uses), and Go-quoted otherwise, with non-UTF-8 bytes as
// \x escapes.
func bytesText(b []byte) string {
	if len(b) == 0 || !utf8.Valid(b) {
		return strconv.Quote(string(b))
	}
	for _, r := range string(b) {
		if !unicode.IsGraphic(r) || unicode.IsSpace(r) || strings.ContainsRune(`"\=,()[]`, r) {
			return strconv.Quote(string(b))
		}
	}
	return string(b)
}

// replayDedupBudget bounds the long results the replay's dedup table holds. It decides only how
// a retry would be answered, never whether a command applies, so any budget rebuilds the same
// keys; a member's default is as good as any.
const replayDedupBudget = 8 << 20

// revisionError is the error of a revision that State.CheckRev refused.
func revisionError(code wire.Code) error {
	switch code {
	case wire.CodeCompacted:
		return ember.ErrCompacted
	case wire.CodeFutureRev:
		return ember.ErrFutureRev
	}
	return nil
}
