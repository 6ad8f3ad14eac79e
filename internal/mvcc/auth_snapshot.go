package mvcc

import "github.com/ember-kv/ember/internal/wire"

// The auth frame (frameAuth) of a snapshot, at most once, before frameEnd, only once the auth
// state has changed: bool enabled, uvarint auth revision, uvarint disable revision, uvarint
// user count, then per user by name: name, bytes password hash, bool no password, uvarint
// revision, uvarint role count, the role names in order; uvarint role count, then per role by
// name: name, uvarint permission count, then per permission in order: type byte, key, range end.

// writeAuth writes st's auth frame, if it has one.
func writeAuth(sw *snapshotWriter, st *State) {
	if st.auth != nil {
		sw.frame(frameAuth, encodeAuth(st.auth))
	}
}

// encodeAuth is an auth frame's payload, also kept in a backend's meta bucket.
func encodeAuth(a *Auth) []byte {
	e := wire.Encoder{}
	e.Bool(a.Enabled)
	e.Uvarint(a.Rev)
	e.Uvarint(a.DisabledRev)
	names := a.UserNames()
	e.Uvarint(uint64(len(names)))
	for _, n := range names {
		u := a.Users[n]
		e.String(u.Name)
		e.Bytes(u.Password)
		e.Bool(u.NoPassword)
		e.Uvarint(u.Rev)
		e.Uvarint(uint64(len(u.Roles)))
		for _, r := range u.Roles {
			e.String(r)
		}
	}
	names = a.RoleNames()
	e.Uvarint(uint64(len(names)))
	for _, n := range names {
		r := a.Roles[n]
		e.String(r.Name)
		e.Uvarint(uint64(len(r.Perms)))
		for _, p := range r.Perms {
			e.Byte(p.Type)
			e.Bytes(p.Key)
			e.Bytes(p.End)
		}
	}
	return e.B
}

// readAuth decodes an auth frame into st, refusing what no state machine could have written.
func readAuth(st *State, d *wire.Decoder) error {
	if st.auth != nil {
		return errSnapshot("auth frame repeated")
	}
	a := &Auth{Enabled: d.Bool(), Rev: d.Uvarint(), DisabledRev: d.Uvarint(),
		Users: map[string]*User{}, Roles: map[string]*Role{}}
	if a.Rev < 1 || a.DisabledRev > a.Rev {
		return errSnapshot("auth revision %d, disabled at %d", a.Rev, a.DisabledRev)
	}
	last := ""
	for i, n := 0, d.Len(d.Remaining()); i < n && d.Err() == nil; i++ {
		u := &User{Name: d.String(), Password: d.Bytes(), NoPassword: d.Bool(), Rev: d.Uvarint()}
		for j, m := 0, d.Len(d.Remaining()); j < m && d.Err() == nil; j++ {
			r := d.String()
			if r == "" || len(u.Roles) > 0 && u.Roles[len(u.Roles)-1] >= r {
				return errSnapshot("user %q: role %q out of order or empty", u.Name, r)
			}
			u.Roles = append(u.Roles, r)
		}
		if u.Name == "" || u.Name <= last && i > 0 || u.Rev > a.Rev || u.NoPassword && u.Password != nil {
			return errSnapshot("user %q out of order or invalid", u.Name)
		}
		last = u.Name
		a.Users[u.Name] = u
	}
	last = ""
	for i, n := 0, d.Len(d.Remaining()); i < n && d.Err() == nil; i++ {
		r := &Role{Name: d.String()}
		for j, m := 0, d.Len(d.Remaining()); j < m && d.Err() == nil; j++ {
			p := Perm{Type: d.Byte(), Key: d.Bytes(), End: d.Bytes()}
			if p.Type > wire.PermReadWrite || len(p.Key) == 0 ||
				len(r.Perms) > 0 && comparePerms(r.Perms[len(r.Perms)-1], p) >= 0 {
				return errSnapshot("role %q: permission %q-%q out of order or invalid", r.Name, p.Key, p.End)
			}
			r.Perms = append(r.Perms, p)
		}
		if r.Name == "" || r.Name <= last && i > 0 {
			return errSnapshot("role %q out of order or invalid", r.Name)
		}
		last = r.Name
		a.Roles[r.Name] = r
	}
	st.auth = a
	return nil
}
