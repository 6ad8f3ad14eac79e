package mvcc

import (
	"bytes"
	"maps"
	"slices"

	"github.com/ember-kv/ember/internal/wire"
)

// RootName is the name of etcd's root user and root role: a user with the root role may do
// anything, and auth can be enabled only once the root user has it.
const RootName = "root"

// Auth is the replicated auth state, etcd's auth store: users, roles and their permissions, the
// enabled flag and the auth revision. It is kept apart from the keys: auth changes do not
// consume KV revisions, and HashKV does not see them.
//
// An Auth is immutable once in a State: applying a command makes a new one sharing the unchanged
// users and roles, so that read views and snapshots share it without copying.
type Auth struct {
	Enabled bool
	// Rev is the auth revision: 1 initially, one more for every change but an enable, as etcd's.
	Rev uint64
	// DisabledRev is the auth revision of the last disable (0 before any): tokens issued before
	// it are void, as etcd drops every token on disable.
	DisabledRev uint64
	Users       map[string]*User
	Roles       map[string]*Role
}

// User is one user of an Auth.
type User struct {
	Name       string
	Password   []byte // bcrypt hash; nil for a user without a password
	NoPassword bool
	Roles      []string // sorted
	// Rev is the auth revision of the user's creation or last password change: tokens issued
	// before it are void, as etcd drops a user's tokens when the password changes.
	Rev uint64
}

// HasRole reports whether u has role.
func (u *User) HasRole(role string) bool {
	_, ok := slices.BinarySearch(u.Roles, role)
	return ok
}

// Role is one role of an Auth.
type Role struct {
	Name  string
	Perms []Perm // by key, then range end; at most one per (key, range end)
}

// Perm is a permission: read, write or both (wire.PermRead, ...) on a key (End empty), a range
// [Key, End), or every key from Key on (End "\x00").
type Perm struct {
	Type     uint8
	Key, End []byte
}

func comparePerms(a, b Perm) int {
	if c := bytes.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return bytes.Compare(a.End, b.End)
}

var initialAuth = &Auth{Rev: 1}

// Auth returns the auth state. It is st's and immutable: do not change it.
func (st *State) Auth() *Auth {
	if st.auth == nil {
		return initialAuth
	}
	return st.auth
}

// applyAuth applies a KindAuth command, as etcd's auth store applies the request, and returns
// its code: CodeOK, or the refusal (which changes nothing).
func (st *State) applyAuth(c *wire.Auth) wire.Code {
	next, code := st.Auth().apply(c)
	if code == wire.CodeOK && next != nil {
		st.auth = next
		if st.dirty != nil {
			st.dirty.auth = true
		}
	}
	return code
}

// apply returns the state after c, or nil when c changes nothing.
func (a *Auth) apply(c *wire.Auth) (*Auth, wire.Code) {
	n := &Auth{Enabled: a.Enabled, Rev: a.Rev + 1, DisabledRev: a.DisabledRev, Users: a.Users, Roles: a.Roles}
	switch c.Op {
	case wire.AuthEnable:
		if a.Enabled {
			return nil, wire.CodeOK
		}
		switch u := a.Users[RootName]; {
		case u == nil:
			return nil, wire.CodeAuthRootUserNotExist
		case !u.HasRole(RootName):
			return nil, wire.CodeAuthRootRoleNotExist
		}
		n.Enabled, n.Rev = true, a.Rev // etcd does not count an enable
	case wire.AuthDisable:
		if !a.Enabled {
			return nil, wire.CodeOK
		}
		n.Enabled, n.DisabledRev = false, n.Rev
	case wire.AuthUserAdd:
		switch {
		case c.Name == "":
			return nil, wire.CodeAuthUserEmpty
		case a.Users[c.Name] != nil:
			return nil, wire.CodeAuthUserExists
		}
		u := &User{Name: c.Name, NoPassword: c.NoPassword, Rev: n.Rev}
		if !c.NoPassword {
			u.Password = c.Password
		}
		n.putUser(u)
	case wire.AuthUserDelete:
		if a.Enabled && c.Name == RootName {
			return nil, wire.CodeAuthInvalidMgmt
		}
		if a.Users[c.Name] == nil {
			return nil, wire.CodeAuthUserNotFound
		}
		n.Users = maps.Clone(a.Users)
		delete(n.Users, c.Name)
	case wire.AuthUserChangePassword:
		u := a.Users[c.Name]
		if u == nil {
			return nil, wire.CodeAuthUserNotFound
		}
		nu := *u
		nu.Rev = n.Rev
		if !u.NoPassword {
			nu.Password = c.Password
		}
		n.putUser(&nu)
	case wire.AuthUserGrantRole:
		u := a.Users[c.Name]
		switch {
		case u == nil:
			return nil, wire.CodeAuthUserNotFound
		case c.Role != RootName && a.Roles[c.Role] == nil: // etcd grants root before it exists
			return nil, wire.CodeAuthRoleNotFound
		case u.HasRole(c.Role):
			return nil, wire.CodeOK // etcd ignores it, revision unchanged
		}
		nu := *u
		i, _ := slices.BinarySearch(u.Roles, c.Role)
		nu.Roles = slices.Insert(slices.Clone(u.Roles), i, c.Role)
		n.putUser(&nu)
	case wire.AuthUserRevokeRole:
		if a.Enabled && c.Name == RootName && c.Role == RootName {
			return nil, wire.CodeAuthInvalidMgmt
		}
		u := a.Users[c.Name]
		if u == nil {
			return nil, wire.CodeAuthUserNotFound
		}
		i, ok := slices.BinarySearch(u.Roles, c.Role)
		if !ok {
			return nil, wire.CodeAuthRoleNotGranted
		}
		nu := *u
		nu.Roles = slices.Delete(slices.Clone(u.Roles), i, i+1)
		n.putUser(&nu)
	case wire.AuthRoleAdd:
		switch {
		case c.Name == "":
			return nil, wire.CodeAuthRoleEmpty
		case a.Roles[c.Name] != nil:
			return nil, wire.CodeAuthRoleExists
		}
		n.putRole(&Role{Name: c.Name})
	case wire.AuthRoleDelete:
		if a.Enabled && c.Name == RootName {
			return nil, wire.CodeAuthInvalidMgmt
		}
		if a.Roles[c.Name] == nil {
			return nil, wire.CodeAuthRoleNotFound
		}
		n.Roles = maps.Clone(a.Roles)
		delete(n.Roles, c.Name)
		n.Users = maps.Clone(a.Users)
		for name, u := range a.Users { // as etcd, the role is revoked from every user
			if i, ok := slices.BinarySearch(u.Roles, c.Name); ok {
				nu := *u
				nu.Roles = slices.Delete(slices.Clone(u.Roles), i, i+1)
				n.Users[name] = &nu
			}
		}
	case wire.AuthRoleGrantPermission:
		if !ValidPermRange(c.Key, c.End) {
			return nil, wire.CodeAuthInvalidMgmt
		}
		r := a.Roles[c.Name]
		if r == nil {
			return nil, wire.CodeAuthRoleNotFound
		}
		p := Perm{Type: c.PermType, Key: c.Key, End: c.End}
		nr := &Role{Name: r.Name, Perms: slices.Clone(r.Perms)}
		if i, ok := slices.BinarySearchFunc(nr.Perms, p, comparePerms); ok {
			nr.Perms[i] = p // an existing permission changes its type
		} else {
			nr.Perms = slices.Insert(nr.Perms, i, p)
		}
		n.putRole(nr)
	case wire.AuthRoleRevokePermission:
		r := a.Roles[c.Name]
		if r == nil {
			return nil, wire.CodeAuthRoleNotFound
		}
		i, ok := slices.BinarySearchFunc(r.Perms, Perm{Key: c.Key, End: c.End}, comparePerms)
		if !ok {
			return nil, wire.CodeAuthPermNotGranted
		}
		n.putRole(&Role{Name: r.Name, Perms: slices.Delete(slices.Clone(r.Perms), i, i+1)})
	}
	return n, wire.CodeOK
}

func (a *Auth) putUser(u *User) {
	a.Users = maps.Clone(a.Users)
	if a.Users == nil {
		a.Users = map[string]*User{}
	}
	a.Users[u.Name] = u
}

func (a *Auth) putRole(r *Role) {
	a.Roles = maps.Clone(a.Roles)
	if a.Roles == nil {
		a.Roles = map[string]*Role{}
	}
	a.Roles[r.Name] = r
}

// ValidPermRange reports whether a permission may name key and end, as etcd decides it: a key,
// and an empty end (the key alone), an end after it, or "\x00" (every key from key on).
func ValidPermRange(key, end []byte) bool {
	return len(key) > 0 && (len(end) == 0 || bytes.Compare(key, end) < 0 || len(end) == 1 && end[0] == 0)
}

// UserNames returns the users' names, sorted, as etcd lists them.
func (a *Auth) UserNames() []string { return slices.Sorted(maps.Keys(a.Users)) }

// RoleNames returns the roles' names, sorted, as etcd lists them.
func (a *Auth) RoleNames() []string { return slices.Sorted(maps.Keys(a.Roles)) }

// IsAdmin reports whether user exists and has the root role.
func (a *Auth) IsAdmin(user string) bool {
	u := a.Users[user]
	return u != nil && u.HasRole(RootName)
}

// Permitted reports whether user may read (write false) or write the key key (end empty), the
// range [key, end), or every key from key on (end "\x00"), as etcd decides it: a user with the
// root role may do anything; anyone else needs the whole range covered by the union of the
// permissions of that type in its roles.
func (a *Auth) Permitted(user string, key, end []byte, write bool) bool {
	u := a.Users[user]
	if u == nil {
		return false
	}
	if u.HasRole(RootName) {
		return true
	}
	want := wire.PermRead
	if write {
		want = wire.PermWrite
	}
	if len(end) == 0 { // one key, the common case: no interval to build
		for _, name := range u.Roles {
			if r := a.Roles[name]; r != nil {
				for _, p := range r.Perms {
					if (p.Type == want || p.Type == wire.PermReadWrite) && p.holds(key) {
						return true
					}
				}
			}
		}
		return false
	}
	w := permInterval(key, end)
	var ivs []interval // the permissions that overlap w
	for _, name := range u.Roles {
		r := a.Roles[name]
		if r == nil {
			continue
		}
		for _, p := range r.Perms {
			if p.Type != want && p.Type != wire.PermReadWrite {
				continue
			}
			iv := permInterval(p.Key, p.End)
			if (w.end == nil || bytes.Compare(iv.start, w.end) < 0) && (iv.end == nil || bytes.Compare(iv.end, w.start) > 0) {
				ivs = append(ivs, iv)
			}
		}
	}
	return covered(ivs, w)
}

// holds reports whether p's keys include key.
func (p *Perm) holds(key []byte) bool {
	switch {
	case len(p.End) == 0:
		return bytes.Equal(p.Key, key)
	case len(p.End) == 1 && p.End[0] == 0:
		return bytes.Compare(p.Key, key) <= 0
	}
	return bytes.Compare(p.Key, key) <= 0 && bytes.Compare(key, p.End) < 0
}

// interval is [start, end) over keys; a nil end is past every key.
type interval struct{ start, end []byte }

// permInterval is the keys a key and range end name, as etcd's ranges: the key alone (an empty
// end; the interval [key, key+"\x00")), every key from key on ("\x00"), or [key, end).
func permInterval(key, end []byte) interval {
	switch {
	case len(end) == 0:
		return interval{key, append(slices.Clip(key), 0)}
	case len(end) == 1 && end[0] == 0:
		return interval{key, nil}
	}
	return interval{key, end}
}

// covered reports whether the union of ivs holds every key of want (whose end is after its
// start).
func covered(ivs []interval, want interval) bool {
	slices.SortFunc(ivs, func(x, y interval) int { return bytes.Compare(x.start, y.start) })
	reach := want.start // the keys of want before reach are covered
	for _, iv := range ivs {
		if bytes.Compare(iv.start, reach) > 0 {
			return false // reach is not covered
		}
		if iv.end == nil {
			return true
		}
		if bytes.Compare(iv.end, reach) > 0 {
			reach = iv.end
			if want.end != nil && bytes.Compare(reach, want.end) >= 0 {
				return true
			}
		}
	}
	return false
}
