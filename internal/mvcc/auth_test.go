package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ember-kv/ember/internal/wire"
)

// richAuth gives richState an auth state with every kind of field: an enabled root, a user
// without a password, roles with key, range, prefix and from-key permissions, a disable and a
// re-enable.
var richAuth = []*wire.Auth{
	{Op: wire.AuthRoleAdd, Name: "root"},
	{Op: wire.AuthUserAdd, Name: "root", Password: []byte("hash-root")},
	{Op: wire.AuthUserGrantRole, Name: "root", Role: "root"},
	{Op: wire.AuthRoleAdd, Name: "rw"},
	{Op: wire.AuthRoleGrantPermission, Name: "rw", Key: []byte("k"), PermType: wire.PermReadWrite},
	{Op: wire.AuthRoleGrantPermission, Name: "rw", Key: []byte("a"), End: []byte("c"), PermType: wire.PermRead},
	{Op: wire.AuthRoleGrantPermission, Name: "rw", Key: []byte("z"), End: []byte{0}, PermType: wire.PermWrite},
	{Op: wire.AuthUserAdd, Name: "alice", Password: []byte("hash-alice")},
	{Op: wire.AuthUserAdd, Name: "svc", NoPassword: true},
	{Op: wire.AuthUserGrantRole, Name: "alice", Role: "rw"},
	{Op: wire.AuthEnable},
	{Op: wire.AuthDisable},
	{Op: wire.AuthEnable},
}

func applyAuthCmds(t testing.TB, st *State, cmds ...*wire.Auth) {
	t.Helper()
	for _, c := range cmds {
		if code := st.applyAuth(c); code != wire.CodeOK {
			t.Fatalf("auth %+v: code %d", c, code)
		}
	}
}

// equalAuth reports whether a and b hold the same auth state.
func equalAuth(a, b *Auth) bool {
	if a.Enabled != b.Enabled || a.Rev != b.Rev || a.DisabledRev != b.DisabledRev ||
		len(a.Users) != len(b.Users) || len(a.Roles) != len(b.Roles) {
		return false
	}
	for n, u := range a.Users {
		v := b.Users[n]
		if v == nil || u.Name != v.Name || !bytes.Equal(u.Password, v.Password) || u.NoPassword != v.NoPassword ||
			u.Rev != v.Rev || !slices.Equal(u.Roles, v.Roles) {
			return false
		}
	}
	for n, r := range a.Roles {
		s := b.Roles[n]
		if s == nil || r.Name != s.Name || !slices.EqualFunc(r.Perms, s.Perms, func(x, y Perm) bool {
			return x.Type == y.Type && comparePerms(x, y) == 0
		}) {
			return false
		}
	}
	return true
}

// TestAuth_Apply walks etcd's auth store through a session: each step's code and the auth
// revision after it are etcd's (server/auth/store.go), and no step moves the KV revision.
func TestAuth_Apply(t *testing.T) {
	st := New()
	stPut(t, st, "k", "v", 0)
	kvRev := st.Rev()
	steps := []struct {
		name string
		cmd  wire.Auth
		code wire.Code
		rev  uint64 // auth revision after the step
	}{
		{"enable without root", wire.Auth{Op: wire.AuthEnable}, wire.CodeAuthRootUserNotExist, 1},
		{"add root", wire.Auth{Op: wire.AuthUserAdd, Name: "root", Password: []byte("h")}, wire.CodeOK, 2},
		{"add root again", wire.Auth{Op: wire.AuthUserAdd, Name: "root", Password: []byte("h")}, wire.CodeAuthUserExists, 2},
		{"add empty user", wire.Auth{Op: wire.AuthUserAdd}, wire.CodeAuthUserEmpty, 2},
		{"enable without root role", wire.Auth{Op: wire.AuthEnable}, wire.CodeAuthRootRoleNotExist, 2},
		{"grant missing role", wire.Auth{Op: wire.AuthUserGrantRole, Name: "root", Role: "nope"}, wire.CodeAuthRoleNotFound, 2},
		{"grant root role before it exists", wire.Auth{Op: wire.AuthUserGrantRole, Name: "root", Role: "root"}, wire.CodeOK, 3},
		{"grant it twice", wire.Auth{Op: wire.AuthUserGrantRole, Name: "root", Role: "root"}, wire.CodeOK, 3},
		{"grant to missing user", wire.Auth{Op: wire.AuthUserGrantRole, Name: "bob", Role: "root"}, wire.CodeAuthUserNotFound, 3},
		{"add empty role", wire.Auth{Op: wire.AuthRoleAdd}, wire.CodeAuthRoleEmpty, 3},
		{"add role", wire.Auth{Op: wire.AuthRoleAdd, Name: "r"}, wire.CodeOK, 4},
		{"add role again", wire.Auth{Op: wire.AuthRoleAdd, Name: "r"}, wire.CodeAuthRoleExists, 4},
		{"grant perm to missing role", wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "x", Key: []byte("a")}, wire.CodeAuthRoleNotFound, 4},
		{"grant perm", wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "r", Key: []byte("a")}, wire.CodeOK, 5},
		{"change its type", wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "r", Key: []byte("a"), PermType: wire.PermWrite}, wire.CodeOK, 6},
		{"revoke a perm never granted", wire.Auth{Op: wire.AuthRoleRevokePermission, Name: "r", Key: []byte("a"), End: []byte("b")}, wire.CodeAuthPermNotGranted, 6},
		{"enable", wire.Auth{Op: wire.AuthEnable}, wire.CodeOK, 6},
		{"enable again", wire.Auth{Op: wire.AuthEnable}, wire.CodeOK, 6},
		{"delete root while enabled", wire.Auth{Op: wire.AuthUserDelete, Name: "root"}, wire.CodeAuthInvalidMgmt, 6},
		{"revoke root's root role while enabled", wire.Auth{Op: wire.AuthUserRevokeRole, Name: "root", Role: "root"}, wire.CodeAuthInvalidMgmt, 6},
		{"delete root role while enabled", wire.Auth{Op: wire.AuthRoleDelete, Name: "root"}, wire.CodeAuthInvalidMgmt, 6},
		{"add user", wire.Auth{Op: wire.AuthUserAdd, Name: "u", Password: []byte("h")}, wire.CodeOK, 7},
		{"grant role", wire.Auth{Op: wire.AuthUserGrantRole, Name: "u", Role: "r"}, wire.CodeOK, 8},
		{"revoke a role not granted", wire.Auth{Op: wire.AuthUserRevokeRole, Name: "u", Role: "root"}, wire.CodeAuthRoleNotGranted, 8},
		{"change password", wire.Auth{Op: wire.AuthUserChangePassword, Name: "u", Password: []byte("h2")}, wire.CodeOK, 9},
		{"change a missing user's password", wire.Auth{Op: wire.AuthUserChangePassword, Name: "x", Password: []byte("h2")}, wire.CodeAuthUserNotFound, 9},
		{"delete role r: revoked from u", wire.Auth{Op: wire.AuthRoleDelete, Name: "r"}, wire.CodeOK, 10},
		{"delete missing role", wire.Auth{Op: wire.AuthRoleDelete, Name: "r"}, wire.CodeAuthRoleNotFound, 10},
		{"disable", wire.Auth{Op: wire.AuthDisable}, wire.CodeOK, 11},
		{"disable again", wire.Auth{Op: wire.AuthDisable}, wire.CodeOK, 11},
		{"delete root while disabled", wire.Auth{Op: wire.AuthUserDelete, Name: "root"}, wire.CodeOK, 12},
		{"delete missing user", wire.Auth{Op: wire.AuthUserDelete, Name: "root"}, wire.CodeAuthUserNotFound, 12},
	}
	for _, s := range steps {
		before := st.Clone()
		if code := st.applyAuth(&s.cmd); code != s.code {
			t.Fatalf("%s: code %d, want %d", s.name, code, s.code)
		}
		if got := st.Auth().Rev; got != s.rev {
			t.Fatalf("%s: auth revision %d, want %d", s.name, got, s.rev)
		}
		if st.Rev() != kvRev {
			t.Fatalf("%s: KV revision %d, want %d", s.name, st.Rev(), kvRev)
		}
		if s.code != wire.CodeOK && !equalAuth(before.Auth(), st.Auth()) {
			t.Fatalf("%s: a refused command changed the auth state", s.name)
		}
	}
	a := st.Auth()
	if u := a.Users["u"]; u == nil || len(u.Roles) != 0 || string(u.Password) != "h2" || u.Rev != 9 {
		t.Fatalf("user u after the session: %+v", u)
	}
	if a.Enabled || a.DisabledRev != 11 || !slices.Equal(a.UserNames(), []string{"u"}) || !slices.Equal(a.RoleNames(), nil) {
		t.Fatalf("auth after the session: %+v", a)
	}
}

// TestAuth_Apply_ClonesAreUnchanged: a read view taken before an auth change keeps the auth
// state it saw.
func TestAuth_Apply_ClonesAreUnchanged(t *testing.T) {
	st := New()
	applyAuthCmds(t, st, &wire.Auth{Op: wire.AuthRoleAdd, Name: "r"}, &wire.Auth{Op: wire.AuthUserAdd, Name: "u"},
		&wire.Auth{Op: wire.AuthUserGrantRole, Name: "u", Role: "r"})
	view := st.Clone()
	applyAuthCmds(t, st, &wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "r", Key: []byte("k")},
		&wire.Auth{Op: wire.AuthRoleDelete, Name: "r"})
	if u := view.Auth().Users["u"]; !slices.Equal(u.Roles, []string{"r"}) || len(view.Auth().Roles["r"].Perms) != 0 {
		t.Fatalf("the view's auth changed: user %+v, role %+v", u, view.Auth().Roles["r"])
	}
}

// TestAuth_Permitted checks permissions as etcd's range permission cache decides them: a key, a
// range, a prefix and from-key, each read and write, with the union of several roles'
// permissions covering a range none covers alone.
func TestAuth_Permitted(t *testing.T) {
	st := New()
	applyAuthCmds(t, st,
		&wire.Auth{Op: wire.AuthRoleAdd, Name: "key"},
		&wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "key", Key: []byte("foo"), PermType: wire.PermRead},
		&wire.Auth{Op: wire.AuthRoleAdd, Name: "range"},
		&wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "range", Key: []byte("b"), End: []byte("d"), PermType: wire.PermReadWrite},
		&wire.Auth{Op: wire.AuthRoleAdd, Name: "prefix"}, // etcdctl --prefix: [p/, p0)
		&wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "prefix", Key: []byte("p/"), End: []byte("p0"), PermType: wire.PermWrite},
		&wire.Auth{Op: wire.AuthRoleAdd, Name: "fromkey"},
		&wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "fromkey", Key: []byte("x"), End: []byte{0}, PermType: wire.PermRead},
		&wire.Auth{Op: wire.AuthRoleAdd, Name: "adjacent"},
		&wire.Auth{Op: wire.AuthRoleGrantPermission, Name: "adjacent", Key: []byte("d"), End: []byte("f"), PermType: wire.PermRead},
		&wire.Auth{Op: wire.AuthUserAdd, Name: "u"},
		&wire.Auth{Op: wire.AuthUserGrantRole, Name: "u", Role: "key"},
		&wire.Auth{Op: wire.AuthUserGrantRole, Name: "u", Role: "range"},
		&wire.Auth{Op: wire.AuthUserGrantRole, Name: "u", Role: "prefix"},
		&wire.Auth{Op: wire.AuthUserGrantRole, Name: "u", Role: "fromkey"},
		&wire.Auth{Op: wire.AuthUserAdd, Name: "v"},
		&wire.Auth{Op: wire.AuthUserGrantRole, Name: "v", Role: "range"},
		&wire.Auth{Op: wire.AuthUserGrantRole, Name: "v", Role: "adjacent"},
		&wire.Auth{Op: wire.AuthUserAdd, Name: "root"},
		&wire.Auth{Op: wire.AuthUserGrantRole, Name: "root", Role: "root"},
	)
	a := st.Auth()
	tests := []struct {
		user     string
		key, end string
		write    bool
		want     bool
	}{
		{"u", "foo", "", false, true},
		{"u", "foo", "", true, false}, // read only
		{"u", "foo", "foo\x00", false, true},
		{"u", "foo", "fop", false, false}, // foo\x00 onwards is not granted
		{"u", "fo", "", false, false},
		{"u", "b", "", true, true},
		{"u", "c\xff", "", false, true},
		{"u", "b", "d", false, true},
		{"u", "b", "d\x00", false, false},
		{"u", "a", "c", false, false},
		{"u", "d", "", false, false}, // the range's end is excluded
		{"u", "p/", "p0", true, true},
		{"u", "p/a", "", true, true},
		{"u", "p/a", "", false, false}, // write only
		{"u", "p", "p0", true, false},
		{"u", "x", "\x00", false, true},
		{"u", "xyz", "", false, true},
		{"u", "y", "z", false, true},
		{"u", "w", "\x00", false, false},
		{"u", "x", "\x00", true, false},
		{"v", "b", "f", false, true}, // two roles' adjacent ranges together
		{"v", "b", "f", true, false}, // the second is read only
		{"v", "b", "f\x00", false, false},
		{"root", "any", "\x00", true, true},
		{"nobody", "foo", "", false, false},
	}
	for _, tc := range tests {
		if got := a.Permitted(tc.user, []byte(tc.key), []byte(tc.end), tc.write); got != tc.want {
			t.Errorf("Permitted(%s, %q-%q, write %v) = %v, want %v", tc.user, tc.key, tc.end, tc.write, got, tc.want)
		}
	}
	if !a.IsAdmin("root") || a.IsAdmin("u") || a.IsAdmin("nobody") {
		t.Errorf("IsAdmin: root %v, u %v, nobody %v", a.IsAdmin("root"), a.IsAdmin("u"), a.IsAdmin("nobody"))
	}
}

// TestSnapshot_RejectsInvalidAuth: auth frames no state machine could have written are refused.
func TestSnapshot_RejectsInvalidAuth(t *testing.T) {
	frame := func(f func(e *wire.Encoder)) []byte {
		e := wire.Encoder{}
		f(&e)
		return newSnapBuilder().header(1, 0).frame(frameAuth, e.B).seal()
	}
	head := func(e *wire.Encoder, rev, disabled uint64) {
		e.Bool(true)
		e.Uvarint(rev)
		e.Uvarint(disabled)
	}
	user := func(e *wire.Encoder, name string, rev uint64, roles ...string) {
		e.String(name)
		e.Bytes([]byte("h"))
		e.Bool(false)
		e.Uvarint(rev)
		e.Uvarint(uint64(len(roles)))
		for _, r := range roles {
			e.String(r)
		}
	}
	valid := frame(func(e *wire.Encoder) {
		head(e, 3, 0)
		e.Uvarint(1)
		user(e, "u", 2, "a", "b")
		e.Uvarint(1)
		e.String("a")
		e.Uvarint(1)
		e.Byte(wire.PermRead)
		e.Bytes([]byte("k"))
		e.Bytes(nil)
	})
	if _, _, err := ReadSnapshot(bytes.NewReader(valid)); err != nil {
		t.Fatalf("valid auth frame: %v", err)
	}
	tests := map[string][]byte{
		"revision 0":             frame(func(e *wire.Encoder) { head(e, 0, 0); e.Uvarint(0); e.Uvarint(0) }),
		"disabled in the future": frame(func(e *wire.Encoder) { head(e, 2, 3); e.Uvarint(0); e.Uvarint(0) }),
		"users out of order": frame(func(e *wire.Encoder) {
			head(e, 3, 0)
			e.Uvarint(2)
			user(e, "v", 1)
			user(e, "u", 1)
			e.Uvarint(0)
		}),
		"user from the future": frame(func(e *wire.Encoder) { head(e, 3, 0); e.Uvarint(1); user(e, "u", 4); e.Uvarint(0) }),
		"roles of a user repeated": frame(func(e *wire.Encoder) {
			head(e, 3, 0)
			e.Uvarint(1)
			user(e, "u", 1, "a", "a")
			e.Uvarint(0)
		}),
		"permission type 3": frame(func(e *wire.Encoder) {
			head(e, 3, 0)
			e.Uvarint(0)
			e.Uvarint(1)
			e.String("a")
			e.Uvarint(1)
			e.Byte(3)
			e.Bytes([]byte("k"))
			e.Bytes(nil)
		}),
		"frame repeated": newSnapBuilder().header(1, 0).frame(frameAuth, []byte{0, 1, 0, 0, 0}).frame(frameAuth, []byte{0, 1, 0, 0, 0}).seal(),
	}
	for name, data := range tests {
		if _, _, err := ReadSnapshot(bytes.NewReader(data)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
}

// BenchmarkAuth_Permitted: the check the gateway makes per key range of a request, for a user
// with 10 roles of 10 permissions each.
func BenchmarkAuth_Permitted(b *testing.B) {
	st := New()
	applyAuthCmds(b, st, &wire.Auth{Op: wire.AuthUserAdd, Name: "u"})
	for r := range 10 {
		role := fmt.Sprintf("r%d", r)
		applyAuthCmds(b, st, &wire.Auth{Op: wire.AuthRoleAdd, Name: role}, &wire.Auth{Op: wire.AuthUserGrantRole, Name: "u", Role: role})
		for p := range 10 {
			key := fmt.Sprintf("k/%d/%d/", r, p)
			applyAuthCmds(b, st, &wire.Auth{Op: wire.AuthRoleGrantPermission, Name: role, Key: []byte(key),
				End: []byte(key[:len(key)-1] + "0"), PermType: wire.PermReadWrite})
		}
	}
	a := st.Auth()
	for _, bc := range []struct {
		name     string
		key, end string
	}{
		{"key", "k/9/9/x", ""},
		{"range", "k/9/9/a", "k/9/9/z"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			key, end := []byte(bc.key), []byte(bc.end)
			b.ReportAllocs()
			for b.Loop() {
				if !a.Permitted("u", key, end, true) {
					b.Fatal("denied")
				}
			}
		})
	}
}

// TestApplier_AuthOldRevision: a write the gateway authorized at an auth revision is refused,
// with nothing applied, once the auth state has changed since, as etcd's auth applier refuses
// it; while auth is disabled, or at the current revision, it applies.
func TestApplier_AuthOldRevision(t *testing.T) {
	a := NewApplier(nil, 8<<20)
	index := uint64(0)
	apply := func(cmd *wire.Command) *wire.Result {
		t.Helper()
		index++
		out, err := a.Apply(index, cmd.Marshal(nil))
		if err != nil {
			t.Fatal(err)
		}
		return out.Result
	}
	put := func(rev uint64) *wire.Command {
		return &wire.Command{Kind: wire.KindTxn, AuthRev: rev, Txn: &wire.Txn{Success: []wire.Op{{Kind: wire.OpPut, Key: []byte("k"), Value: []byte("v")}}}}
	}
	if res := apply(put(1)); res.Code != wire.CodeOK || res.Revision != 2 {
		t.Fatalf("write at revision 1, auth disabled: code %d rev %d", res.Code, res.Revision)
	}
	for _, c := range []*wire.Auth{{Op: wire.AuthUserAdd, Name: "root"}, {Op: wire.AuthUserGrantRole, Name: "root", Role: "root"}, {Op: wire.AuthEnable}} {
		if res := apply(&wire.Command{Kind: wire.KindAuth, Auth: c}); res.Code != wire.CodeOK {
			t.Fatalf("%+v: code %d", c, res.Code)
		}
	}
	cur := a.State().Auth().Rev
	if res := apply(put(cur - 1)); res.Code != wire.CodeAuthOldRevision || res.Revision != a.State().Rev() {
		t.Fatalf("write authorized at an older auth revision: code %d", res.Code)
	}
	if res := apply(&wire.Command{Kind: wire.KindLeaseRevoke, LeaseID: 9, AuthRev: cur - 1}); res.Code != wire.CodeAuthOldRevision {
		t.Fatalf("revoke authorized at an older auth revision: code %d", res.Code)
	}
	before := a.State().Rev()
	if res := apply(put(cur)); res.Code != wire.CodeOK || res.Revision != before+1 {
		t.Fatalf("write at the current auth revision: code %d rev %d", res.Code, res.Revision)
	}
	if res := apply(&wire.Command{Kind: wire.KindAuth, Auth: &wire.Auth{Op: wire.AuthDisable}}); res.Code != wire.CodeOK {
		t.Fatalf("disable: code %d", res.Code)
	}
	if res := apply(put(cur)); res.Code != wire.CodeOK {
		t.Fatalf("write authorized before a disable: code %d; etcd lets it through once auth is disabled", res.Code)
	}
}
