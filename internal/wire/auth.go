package wire

// AuthOp says what a KindAuth command changes, as etcd's auth requests do.
type AuthOp uint8

const (
	AuthEnable AuthOp = iota + 1
	AuthDisable
	AuthUserAdd
	AuthUserDelete
	AuthUserChangePassword
	AuthUserGrantRole
	AuthUserRevokeRole
	AuthRoleAdd
	AuthRoleDelete
	AuthRoleGrantPermission
	AuthRoleRevokePermission
	authOpMax
)

// Permission types, numbered as etcd's authpb.Permission_Type.
const (
	PermRead      uint8 = 0
	PermWrite     uint8 = 1
	PermReadWrite uint8 = 2
)

// Auth is a KindAuth command. Which fields matter depends on Op.
type Auth struct {
	Op   AuthOp
	Name string // the user, or the role for the Role ops
	Role string // AuthUserGrantRole, AuthUserRevokeRole

	// AuthUserAdd, AuthUserChangePassword: the bcrypt hash of the password, made by the
	// proposer (hashing is too slow for the apply path), and for AuthUserAdd whether the user
	// has no password (it then authenticates only by other means, as etcd's).
	Password   []byte
	NoPassword bool

	// AuthRoleGrantPermission, AuthRoleRevokePermission: the permission's key range, as
	// etcd's (End empty: the key alone; "\x00": every key from Key on), and for a grant its
	// type (PermRead, PermWrite, PermReadWrite).
	Key, End []byte
	PermType uint8
}

func encodeAuthPtr(e *Encoder, a *Auth) {
	if !e.present(a != nil) {
		return
	}
	e.Byte(byte(a.Op))
	e.String(a.Name)
	e.String(a.Role)
	e.Bytes(a.Password)
	e.Bool(a.NoPassword)
	e.Bytes(a.Key)
	e.Bytes(a.End)
	e.Byte(a.PermType)
}

func decodeAuthPtr(d *Decoder) *Auth {
	if !d.required("auth") {
		return nil
	}
	a := &Auth{Op: AuthOp(d.Byte()), Name: d.String(), Role: d.String(), Password: d.Bytes(),
		NoPassword: d.Bool(), Key: d.Bytes(), End: d.Bytes(), PermType: d.Byte()}
	switch {
	case a.Op == 0 || a.Op >= authOpMax:
		d.fail("unknown auth op %d", a.Op)
	case a.PermType > PermReadWrite:
		d.fail("unknown permission type %d", a.PermType)
	}
	return a
}
