package reliability

import (
	"fmt"
	"testing"

	"github.com/anishathalye/porcupine"
)

// The G1 model: each key is a register that exists or not and holds a value. Every operation
// touches one key, so histories are partitioned by key and the partitions checked in parallel.
//
// Revisions are not in the state. Every written value is unique, so the compare
// ModRevision(k) = r, with r the mod revision a client saw together with value v, holds exactly
// when k exists and holds v (and for r = 0, when k does not exist): the CAS below is modelled
// on values. Revisions are checked apart, against the recorded history (checkRevisions).
//
// An operation whose outcome is unknown has Output.Unknown set and, unless the recorder saw
// its effect, Return = never. Step applies its effect without checking an output: linearized
// before the end it took effect, linearized last it is invisible, so both outcomes are covered.

type opKind uint8

const (
	opGet    opKind = iota
	opPut           // also a put attached to a lease
	opDelete        // of one key
	opCAS           // If ModRevision(k) = r Then Put(k, Val) Else Get(k)
	opRevoke        // of the lease of the put that wrote Val to Key: deletes Key if it still holds Val
)

var opNames = [...]string{"get", "put", "delete", "cas", "revoke"}

type kvInput struct {
	Kind opKind
	Key  string
	Val  string // put and CAS: the value written; revoke: the value of the leased put
	// Exp is the state the CAS compares with (what the client last saw of Key).
	Exp kvState
	// PrevKV asks a put for the previous value, which the model then checks.
	PrevKV bool
	Lease  bool // a put attached to a lease (for descriptions only)
}

type kvOutput struct {
	Unknown bool    // outcome unknown: nothing below is checked
	Got     kvState // get, put with PrevKV, failed CAS: the key as read
	Deleted int64
	OK      bool  // CAS succeeded
	Rev     int64 // response header revision (descriptions only)
}

// kvState is one key: whether it exists and its value.
type kvState struct {
	Exists bool
	Val    string
}

func (s kvState) String() string {
	if !s.Exists {
		return "∅"
	}
	return fmt.Sprintf("%q", s.Val)
}

func step(st kvState, in kvInput, out kvOutput) (bool, kvState) {
	put := kvState{Exists: true, Val: in.Val}
	switch in.Kind {
	case opGet:
		return out.Unknown || out.Got == st, st
	case opPut:
		return out.Unknown || !in.PrevKV || out.Got == st, put
	case opDelete:
		want := int64(0)
		if st.Exists {
			want = 1
		}
		return out.Unknown || out.Deleted == want, kvState{}
	case opCAS:
		holds := st == in.Exp
		switch {
		case out.Unknown && holds:
			return true, put
		case out.Unknown:
			return true, st
		case out.OK != holds:
			return false, st
		case holds:
			return true, put
		}
		return out.Got == st, st
	case opRevoke:
		if st == put {
			return true, kvState{}
		}
		return true, st
	}
	panic(fmt.Sprintf("unknown op kind %d", in.Kind))
}

func describeOp(in kvInput, out kvOutput) string {
	var s string
	switch in.Kind {
	case opGet:
		s = fmt.Sprintf("get(%s) → %v", in.Key, out.Got)
	case opPut:
		lease := ""
		if in.Lease {
			lease = ", lease"
		}
		s = fmt.Sprintf("put(%s, %q%s)", in.Key, in.Val, lease)
		if in.PrevKV {
			s += fmt.Sprintf(" → prev %v", out.Got)
		}
	case opDelete:
		s = fmt.Sprintf("delete(%s) → %d", in.Key, out.Deleted)
	case opCAS:
		s = fmt.Sprintf("cas(%s, if %v then %q) → %v", in.Key, in.Exp, in.Val, out.OK)
		if !out.OK {
			s += fmt.Sprintf(", got %v", out.Got)
		}
	case opRevoke:
		s = fmt.Sprintf("revoke(lease of %s=%q)", in.Key, in.Val)
	}
	if out.Unknown {
		return s + " → unknown"
	}
	return fmt.Sprintf("%s @%d", s, out.Rev)
}

var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(kvInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return kvState{} },
	Step: func(st, in, out any) (bool, any) {
		return step(st.(kvState), in.(kvInput), out.(kvOutput))
	},
	DescribeOperation: func(in, out any) string { return describeOp(in.(kvInput), out.(kvOutput)) },
	DescribeState:     func(st any) string { return st.(kvState).String() },
}

// TestModel checks the checker: small histories the model must accept, and ones it must
// reject, among them the anomalies G1 exists to catch (a stale read, a lost acknowledged
// write, a CAS that succeeded on a changed key, a write reported failed that took effect).
func TestModel(t *testing.T) {
	type op struct {
		client    int
		in        kvInput
		out       kvOutput
		call, ret int64
	}
	put := func(k, v string) kvInput { return kvInput{Kind: opPut, Key: k, Val: v} }
	get := func(k string) kvInput { return kvInput{Kind: opGet, Key: k} }
	has := func(v string) kvOutput { return kvOutput{Got: kvState{Exists: true, Val: v}} }
	cas := func(k string, exp kvState, v string) kvInput { return kvInput{Kind: opCAS, Key: k, Exp: exp, Val: v} }
	unknown := kvOutput{Unknown: true}
	for _, tc := range []struct {
		name string
		ok   bool
		ops  []op
	}{
		{"read after write", true, []op{
			{0, put("a", "1"), kvOutput{}, 0, 10},
			{1, get("a"), has("1"), 20, 30},
		}},
		{"stale read", false, []op{
			{0, put("a", "1"), kvOutput{}, 0, 10},
			{0, put("a", "2"), kvOutput{}, 20, 30},
			{1, get("a"), has("1"), 40, 50},
		}},
		{"lost write", false, []op{
			{0, put("a", "1"), kvOutput{}, 0, 10},
			{1, get("a"), kvOutput{}, 20, 30},
		}},
		{"unknown write seen later", true, []op{
			{0, put("a", "1"), unknown, 0, never},
			{1, get("a"), kvOutput{}, 20, 30},
			{1, get("a"), has("1"), 40, 50},
		}},
		{"unknown write never seen", true, []op{
			{0, put("a", "1"), unknown, 0, never},
			{1, get("a"), kvOutput{}, 20, 30},
		}},
		{"value never written", false, []op{
			{1, get("a"), has("1"), 20, 30},
		}},
		{"cas on changed key succeeded", false, []op{
			{0, put("a", "1"), kvOutput{}, 0, 10},
			{0, put("a", "2"), kvOutput{}, 20, 30},
			{1, cas("a", kvState{Exists: true, Val: "1"}, "3"), kvOutput{OK: true}, 40, 50},
		}},
		{"cas failed, read current", true, []op{
			{0, put("a", "1"), kvOutput{}, 0, 10},
			{1, cas("a", kvState{}, "3"), kvOutput{Got: kvState{Exists: true, Val: "1"}}, 40, 50},
		}},
		{"delete count", false, []op{
			{0, kvInput{Kind: opDelete, Key: "a"}, kvOutput{Deleted: 1}, 0, 10},
		}},
		{"revoke deletes only its own value", false, []op{
			{0, kvInput{Kind: opPut, Key: "a", Val: "1", Lease: true}, kvOutput{}, 0, 10},
			{0, put("a", "2"), kvOutput{}, 20, 30},
			{0, kvInput{Kind: opRevoke, Key: "a", Val: "1"}, kvOutput{}, 40, 50},
			{1, get("a"), kvOutput{}, 60, 70},
		}},
		{"keys are independent", true, []op{
			{0, put("a", "1"), kvOutput{}, 0, 10},
			{1, get("b"), kvOutput{}, 20, 30},
		}},
	} {
		var h []porcupine.Operation
		for _, o := range tc.ops {
			h = append(h, porcupine.Operation{ClientId: o.client, Input: o.in, Output: o.out, Call: o.call, Return: o.ret})
		}
		if got := porcupine.CheckOperations(kvModel, h); got != tc.ok {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.ok)
		}
	}
}
