// Package wire defines the commands that travel through the raft log and over the peer port, the
// results the state machine returns for them, and their binary encoding.
//
// Everything here is plain data. The encoding is hand-written (no reflection): a command is
// decoded on every member for every log entry, so it sits on the hot path. Decoders never panic
// on malformed input; they return ErrMalformed.
package wire

import "cmp"

// Kind says what a Command does.
type Kind uint8

const (
	KindTxn             Kind = 1 // Put, Delete and Txn all travel as a Txn
	KindCompact         Kind = 2
	KindLeaseGrant      Kind = 3
	KindLeaseRevoke     Kind = 4
	KindLeaseCheckpoint Kind = 5
	KindLeaderStart     Kind = 6 // first entry of a leader's term; see readindex
	KindAlarm           Kind = 7 // raise or clear a member's alarm
	KindAuth            Kind = 8 // change the auth state (users, roles, permissions); see Auth
)

// Alarm actions and types of a KindAlarm command, numbered as etcd's AlarmRequest.
const (
	AlarmActivate   uint8 = 1
	AlarmDeactivate uint8 = 2

	AlarmNoSpace uint8 = 1
	AlarmCorrupt uint8 = 2
)

// RequestID identifies a command for deduplication. The zero value means "do not deduplicate".
type RequestID struct {
	Client uint64
	Seq    uint64
}

// IsZero reports whether id carries no identity.
func (id RequestID) IsZero() bool { return id.Client == 0 && id.Seq == 0 }

// Compare orders IDs by client, then sequence number.
func (id RequestID) Compare(o RequestID) int {
	if c := cmp.Compare(id.Client, o.Client); c != 0 {
		return c
	}
	return cmp.Compare(id.Seq, o.Seq)
}

// Command is one raft log entry's payload.
type Command struct {
	ID   RequestID
	Kind Kind

	// RetryFloor is set on a retry of a command whose first attempt may have been applied: the
	// proposer's applied index before that first attempt, a lower bound on the first attempt's
	// log index. The state machine refuses a retry it can no longer deduplicate (its window has
	// passed since RetryFloor) rather than risk applying the command twice.
	RetryFloor uint64

	Txn *Txn // KindTxn

	Revision int64 // KindCompact: the revision to compact to

	LeaseID  int64 // KindLeaseGrant, KindLeaseRevoke; KindTxn: a lease granted before the txn runs
	LeaseTTL int64 // KindLeaseGrant, and KindTxn with a lease: seconds (> 0)

	Checkpoints []LeaseCheckpoint // KindLeaseCheckpoint

	Term   uint64 // KindLeaderStart
	NodeID string // KindLeaderStart; KindAlarm: the member the alarm is about

	AlarmAction uint8 // KindAlarm: AlarmActivate or AlarmDeactivate
	AlarmType   uint8 // KindAlarm: AlarmNoSpace or AlarmCorrupt

	Auth *Auth // KindAuth

	// AuthRev, for KindTxn and KindLeaseRevoke sent by the etcd gateway, is the auth revision
	// the request was authorized at: while auth is enabled, the command is refused with
	// CodeAuthOldRevision once the auth state has changed since. 0 means not checked.
	AuthRev uint64
}

// LeaseCheckpoint records how much of a lease's TTL was left, so a new leader does not restart it
// from the full TTL.
type LeaseCheckpoint struct {
	ID          int64
	RemainingMs int64
}

// Txn is a compare-and-swap transaction. Put and Delete are a Txn with one op and no compares.
type Txn struct {
	Compares []Compare
	Success  []Op
	Failure  []Op
}

// OpKind says what an Op does.
type OpKind uint8

const (
	OpRange  OpKind = 1
	OpPut    OpKind = 2
	OpDelete OpKind = 3
	OpTxn    OpKind = 4
)

// Op is one operation of a transaction. Which fields matter depends on Kind.
type Op struct {
	Kind OpKind
	Key  []byte
	End  []byte // range end; empty = single key, "\x00" = every key >= Key

	// OpPut
	Value       []byte
	Lease       int64
	PrevKV      bool // OpPut, OpDelete
	IgnoreValue bool
	IgnoreLease bool

	// OpRange
	Revision     int64
	Limit        int64
	SortOrder    uint8
	SortTarget   uint8
	Serializable bool
	KeysOnly     bool
	CountOnly    bool
	MinModRev    int64
	MaxModRev    int64
	MinCreateRev int64
	MaxCreateRev int64

	// OpTxn
	Txn *Txn
}

// Sort orders and targets, numbered as etcd's RangeRequest.
const (
	SortNone    uint8 = 0
	SortAscend  uint8 = 1
	SortDescend uint8 = 2

	SortByKey     uint8 = 0
	SortByVersion uint8 = 1
	SortByCreate  uint8 = 2
	SortByMod     uint8 = 3
	SortByValue   uint8 = 4
)

// CompareTarget is what a Compare looks at.
type CompareTarget uint8

const (
	TargetVersion CompareTarget = 0
	TargetCreate  CompareTarget = 1
	TargetMod     CompareTarget = 2
	TargetValue   CompareTarget = 3
	TargetLease   CompareTarget = 4
)

// CompareResult is the relation a Compare tests.
type CompareResult uint8

const (
	CompareEqual    CompareResult = 0
	CompareGreater  CompareResult = 1
	CompareLess     CompareResult = 2
	CompareNotEqual CompareResult = 3
)

// Compare is one condition of a Txn.
type Compare struct {
	Target CompareTarget
	Result CompareResult
	Key    []byte
	End    []byte
	Int    int64  // Version, Create, Mod, Lease
	Value  []byte // Value
}

// KV is one key-value pair as returned to clients.
type KV struct {
	Key            []byte
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

// RangeResult answers an OpRange.
type RangeResult struct {
	Kvs   []*KV
	More  bool
	Count int64
}

// PutResult answers an OpPut.
type PutResult struct {
	PrevKV *KV
}

// DeleteResult answers an OpDelete.
type DeleteResult struct {
	Deleted int64
	PrevKVs []*KV
}

// OpResult answers one Op; exactly the field matching Kind is set.
type OpResult struct {
	Kind   OpKind
	Range  *RangeResult
	Put    *PutResult
	Delete *DeleteResult
	Txn    *TxnResult
}

// TxnResult answers a Txn.
type TxnResult struct {
	Succeeded bool
	Responses []OpResult
}

// Code is an error the state machine or a peer returns as a value. The root package maps each
// code to its exported sentinel error.
type Code uint8

const (
	CodeOK Code = iota
	CodeCompacted
	CodeFutureRev
	CodeKeyNotFound
	CodeEmptyKey
	CodeRequestTooLarge
	CodeTooManyOps
	CodeDuplicateKey
	CodeLeaseNotFound
	CodeLeaseExists
	CodeTTLTooLarge
	CodeNoLeader
	CodeTimeout
	CodeNoSpace
	CodeStopped
	CodeMemberNotFound
	CodeMemberExists
	CodeValueProvided
	CodeLeaseProvided
	CodeNotLeader      // the peer asked is not the leader; retry elsewhere
	CodeNotReady       // the leader has not applied its first entry of the term yet; retry
	CodeMalformed      // a request could not be decoded
	CodeLeadershipLost // the outcome of a write is unknown
	CodeLearnerNotReady
	CodeInternal
	CodeUnhealthy // a membership change would leave too few healthy voters for a quorum
	// CodeResultNotHeld answers a retry of a command that was applied but whose result the
	// state machine no longer holds (its dedup table keeps results within a byte budget): the
	// command must not apply again, and its result cannot be given, so the outcome the caller
	// sees is unknown. Appended last: codes are stored in snapshots and sent between members.
	CodeResultNotHeld
	// CodeNotMember refuses a request that only members may make, sent over a peer connection
	// whose member is not in the cluster's configuration.
	CodeNotMember
	// CodeCorrupt refuses a write while a CORRUPT alarm is raised, as etcd's "corrupt cluster".
	CodeCorrupt
	// Auth refusals, as etcd's auth store makes them; they travel inside a result only (IsAuth).
	CodeAuthRootUserNotExist
	CodeAuthRootRoleNotExist
	CodeAuthUserExists
	CodeAuthUserEmpty
	CodeAuthUserNotFound
	CodeAuthRoleExists
	CodeAuthRoleNotFound
	CodeAuthRoleEmpty
	CodeAuthRoleNotGranted
	CodeAuthPermNotGranted
	CodeAuthInvalidMgmt
	CodeAuthOldRevision // a command's AuthRev is older than the auth state
	codeMax
)

// Valid reports whether c is a known code.
func (c Code) Valid() bool { return c < codeMax }

// IsAuth reports whether c is an auth refusal: of a KindAuth command, or of a command
// authorized at an older auth revision (CodeAuthOldRevision).
func (c Code) IsAuth() bool { return c >= CodeAuthRootUserNotExist && c < codeMax }

// Result is what applying a Command returns.
type Result struct {
	Code     Code
	Revision int64 // store revision after the command (header revision)

	Txn *TxnResult // KindTxn

	LeaseID  int64 // KindLeaseGrant
	LeaseTTL int64 // KindLeaseGrant
}
