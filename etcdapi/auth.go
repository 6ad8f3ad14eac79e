package etcdapi

import (
	"context"
	"crypto/rand"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// authServer is etcd's Auth service. Users, roles, permissions and the enabled flag are
// replicated state (the store's auth state, changed through its log as etcd changes its auth
// store); tokens are etcd's simple tokens, local to the member that issued them, as etcd's.
type authServer struct {
	pb.UnimplementedAuthServer
	g *gateway
}

// defaultTokenTTL is etcd's simple token TTL (--auth-token-ttl): a token unused that long is void.
const defaultTokenTTL = 5 * time.Minute

// errNoPasswordUser is etcd's answer to a password given for a user without one: its auth
// store's error, which etcd has no gRPC error for, so it travels as codes.Unknown.
var errNoPasswordUser = status.Error(codes.Unknown, "auth: authentication failed, password was given for no password user")

// authCodes maps the store's refusals of an auth change to etcd's errors.
var authCodes = map[wire.Code]error{
	wire.CodeAuthRootUserNotExist: rpctypes.ErrGRPCRootUserNotExist,
	wire.CodeAuthRootRoleNotExist: rpctypes.ErrGRPCRootRoleNotExist,
	wire.CodeAuthUserExists:       rpctypes.ErrGRPCUserAlreadyExist,
	wire.CodeAuthUserEmpty:        rpctypes.ErrGRPCUserEmpty,
	wire.CodeAuthUserNotFound:     rpctypes.ErrGRPCUserNotFound,
	wire.CodeAuthRoleExists:       rpctypes.ErrGRPCRoleAlreadyExist,
	wire.CodeAuthRoleNotFound:     rpctypes.ErrGRPCRoleNotFound,
	wire.CodeAuthRoleEmpty:        rpctypes.ErrGRPCRoleEmpty,
	wire.CodeAuthRoleNotGranted:   rpctypes.ErrGRPCRoleNotGranted,
	wire.CodeAuthPermNotGranted:   rpctypes.ErrGRPCPermissionNotGranted,
	wire.CodeAuthInvalidMgmt:      rpctypes.ErrGRPCInvalidAuthMgmt,
}

// tokens are the simple tokens this member issued. A token names its user and the auth
// revision it was issued at, which voids it, as etcd drops tokens, once the user is deleted
// or its password changes (the user's revision passes it) or auth is disabled (the disable's
// revision passes it). Expired tokens are dropped when used, and swept when a new one is
// issued once the table has doubled since the last sweep, so issuing costs O(1) amortized.
type tokens struct {
	ttl time.Duration

	mu      sync.Mutex // guards m and sweepAt
	m       map[string]*token
	sweepAt int // sweep expired tokens once m holds this many
}

// minSweep is the table size below which expired tokens are not swept.
const minSweep = 64

type token struct {
	user    string
	rev     uint64
	expires time.Time
}

// issue returns a new token for user, issued at auth revision rev.
func (ts *tokens) issue(user string, rev uint64) string {
	tok := rand.Text() // 26 characters of 130 random bits
	now := time.Now()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.m) >= ts.sweepAt {
		for k, t := range ts.m {
			if now.After(t.expires) {
				delete(ts.m, k)
			}
		}
		ts.sweepAt = max(2*len(ts.m), minSweep)
	}
	ts.m[tok] = &token{user: user, rev: rev, expires: now.Add(ts.ttl)}
	return tok
}

// user returns the user of a valid token, and restarts its TTL, as etcd's do on every use.
func (ts *tokens) user(tok string, a *mvcc.Auth) (string, bool) {
	now := time.Now()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := ts.m[tok]
	if t == nil {
		return "", false
	}
	u := a.Users[t.user]
	if now.After(t.expires) || t.rev < a.DisabledRev || u == nil || u.Rev > t.rev {
		delete(ts.m, tok)
		return "", false
	}
	t.expires = now.Add(ts.ttl)
	return t.user, true
}

// caller is who makes a request and the auth state its permissions are checked against; a nil
// caller stands for auth disabled, where everything is allowed.
type caller struct {
	a    *mvcc.Auth
	user string // "" when the request carries no token
	// keys maps the client's keys to the store's (Store.GatewayKeys); nil for none.
	keys func(key, end []byte) ([]byte, []byte)
}

// caller returns the caller of the request of ctx, checked against this member's applied auth
// state, as etcd checks against its member's auth store. A token that is not (or no longer)
// valid is etcd's "invalid auth token", which makes clientv3 authenticate again.
func (g *gateway) caller(ctx context.Context) (*caller, error) {
	if g.trusted {
		return nil, nil
	}
	a := g.st.GatewayAuth()
	if !a.Enabled {
		return nil, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	ts := md.Get(rpctypes.TokenFieldNameGRPC)
	if len(ts) == 0 {
		ts = md.Get(rpctypes.TokenFieldNameSwagger)
	}
	if len(ts) == 0 {
		return &caller{a: a, keys: g.st.GatewayKeys}, nil
	}
	user, ok := g.tokens.user(ts[0], a)
	if !ok {
		return nil, rpctypes.ErrGRPCInvalidAuthToken
	}
	return &caller{a: a, user: user, keys: g.st.GatewayKeys}, nil
}

// permitted is etcd's IsRangePermitted (write false) and IsPutPermitted/IsDeleteRangePermitted,
// on the store's keys.
func (c *caller) permitted(key, end []byte, write bool) error {
	if c != nil && c.keys != nil {
		key, end = c.keys(key, end)
	}
	switch {
	case c == nil:
		return nil
	case c.user == "":
		return rpctypes.ErrGRPCUserEmpty
	case !c.a.Permitted(c.user, key, end, write):
		return rpctypes.ErrGRPCPermissionDenied
	}
	return nil
}

// admin is etcd's IsAdminPermitted: the caller must have the root role.
func (c *caller) admin() error {
	switch {
	case c == nil:
		return nil
	case c.user == "":
		return rpctypes.ErrGRPCUserEmpty
	case c.a.Users[c.user] == nil:
		return rpctypes.ErrGRPCUserNotFound
	case !c.a.IsAdmin(c.user):
		return rpctypes.ErrGRPCPermissionDenied
	}
	return nil
}

// known is etcd's requireAuthInfo: any authenticated caller.
func (c *caller) known() error {
	if c != nil && c.user == "" {
		return rpctypes.ErrGRPCUserEmpty
	}
	return nil
}

// change applies an auth change through the log, once the caller is found to be an admin, as
// etcd's auth applier checks before applying one.
func (a *authServer) change(ctx context.Context, cmd *wire.Auth) (*pb.ResponseHeader, error) {
	if err := a.g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	return a.propose(ctx, cmd)
}

// propose applies an auth change through the log.
func (a *authServer) propose(ctx context.Context, cmd *wire.Auth) (*pb.ResponseHeader, error) {
	h, code, err := a.g.st.GatewayAuthPropose(ctx, cmd)
	if err != nil {
		return nil, toGRPC(err)
	}
	if code != wire.CodeOK {
		return nil, authCodes[code]
	}
	return a.g.header(ctx, h), nil
}

// hash is the bcrypt hash of password, made here rather than in the state machine, as etcd's
// API layer makes it: bcrypt is deliberately slow.
func (a *authServer) hash(password string) ([]byte, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), a.g.cfg.bcryptCost)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return h, nil
}

// Authenticate checks a user's password against the auth state at a linearizable point, as
// etcd, and issues a simple token.
func (a *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	st, h, err := a.g.st.GatewayAuthView(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	if !st.Enabled {
		return nil, rpctypes.ErrGRPCAuthNotEnabled
	}
	u := st.Users[r.Name]
	switch {
	case u == nil:
		return nil, rpctypes.ErrGRPCAuthFailed
	case u.NoPassword:
		return nil, errNoPasswordUser
	case bcrypt.CompareHashAndPassword(u.Password, []byte(r.Password)) != nil:
		a.g.cfg.log.Info("etcdapi: invalid password", "user", r.Name)
		return nil, rpctypes.ErrGRPCAuthFailed
	}
	return &pb.AuthenticateResponse{Header: a.g.header(ctx, h), Token: a.g.tokens.issue(r.Name, st.Rev)}, nil
}

func (a *authServer) AuthStatus(ctx context.Context, _ *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	if err := a.g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	st, h, err := a.g.st.GatewayAuthView(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.AuthStatusResponse{Header: a.g.header(ctx, h), Enabled: st.Enabled, AuthRevision: st.Rev}, nil
}

func (a *authServer) AuthEnable(ctx context.Context, _ *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	h, err := a.change(ctx, &wire.Auth{Op: wire.AuthEnable})
	if err != nil {
		return nil, err
	}
	return &pb.AuthEnableResponse{Header: h}, nil
}

func (a *authServer) AuthDisable(ctx context.Context, _ *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	h, err := a.change(ctx, &wire.Auth{Op: wire.AuthDisable})
	if err != nil {
		return nil, err
	}
	return &pb.AuthDisableResponse{Header: h}, nil
}

func (a *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	cmd := &wire.Auth{Op: wire.AuthUserAdd, Name: r.Name, NoPassword: r.Options != nil && r.Options.NoPassword}
	if !cmd.NoPassword {
		var err error
		if cmd.Password, err = a.hash(r.Password); err != nil {
			return nil, err
		}
	}
	h, err := a.change(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserAddResponse{Header: h}, nil
}

func (a *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	h, err := a.change(ctx, &wire.Auth{Op: wire.AuthUserDelete, Name: r.Name})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserDeleteResponse{Header: h}, nil
}

func (a *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	cmd := &wire.Auth{Op: wire.AuthUserChangePassword, Name: r.Name}
	if r.Password != "" { // as etcd: an empty password leaves no hash, and no way to log in
		var err error
		if cmd.Password, err = a.hash(r.Password); err != nil {
			return nil, err
		}
	}
	h, err := a.change(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserChangePasswordResponse{Header: h}, nil
}

func (a *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	h, err := a.change(ctx, &wire.Auth{Op: wire.AuthUserGrantRole, Name: r.User, Role: r.Role})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserGrantRoleResponse{Header: h}, nil
}

func (a *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	h, err := a.change(ctx, &wire.Auth{Op: wire.AuthUserRevokeRole, Name: r.Name, Role: r.Role})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserRevokeRoleResponse{Header: h}, nil
}

func (a *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	h, err := a.change(ctx, &wire.Auth{Op: wire.AuthRoleAdd, Name: r.Name})
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleAddResponse{Header: h}, nil
}

func (a *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	h, err := a.change(ctx, &wire.Auth{Op: wire.AuthRoleDelete, Name: r.Role})
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleDeleteResponse{Header: h}, nil
}

func (a *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	if err := a.g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	// As etcd's auth store, before it looks the role up.
	switch {
	case r.Perm == nil:
		return nil, rpctypes.ErrGRPCPermissionNotGiven
	case !mvcc.ValidPermRange(r.Perm.Key, r.Perm.RangeEnd):
		return nil, rpctypes.ErrGRPCInvalidAuthMgmt
	case r.Perm.PermType < authpb.READ || r.Perm.PermType > authpb.READWRITE:
		return nil, status.Error(codes.InvalidArgument, "etcdapi: unknown permission type")
	}
	h, err := a.propose(ctx, &wire.Auth{Op: wire.AuthRoleGrantPermission, Name: r.Name,
		Key: r.Perm.Key, End: r.Perm.RangeEnd, PermType: uint8(r.Perm.PermType)})
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleGrantPermissionResponse{Header: h}, nil
}

func (a *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	h, err := a.change(ctx, &wire.Auth{Op: wire.AuthRoleRevokePermission, Name: r.Role, Key: r.Key, End: r.RangeEnd})
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleRevokePermissionResponse{Header: h}, nil
}

// read returns the auth state at a linearizable point for a request that reads it, once check
// allows the caller (etcd serves these reads through its log, which is linearizable).
func (a *authServer) read(ctx context.Context, check func(*caller) error) (*mvcc.Auth, *pb.ResponseHeader, error) {
	c, err := a.g.caller(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := check(c); err != nil {
		return nil, nil, err
	}
	st, h, err := a.g.st.GatewayAuthView(ctx)
	if err != nil {
		return nil, nil, toGRPC(err)
	}
	return st, a.g.header(ctx, h), nil
}

func (a *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	// As etcd: an admin, or the user itself.
	st, h, err := a.read(ctx, func(c *caller) error {
		if err := c.admin(); err != nil && c.user != r.Name {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	u := st.Users[r.Name]
	if u == nil {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	return &pb.AuthUserGetResponse{Header: h, Roles: append([]string(nil), u.Roles...)}, nil
}

func (a *authServer) UserList(ctx context.Context, _ *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	st, h, err := a.read(ctx, (*caller).admin)
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserListResponse{Header: h, Users: st.UserNames()}, nil
}

func (a *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	// As etcd: an admin, or a user with the role.
	st, h, err := a.read(ctx, func(c *caller) error {
		if err := c.admin(); err != nil {
			if u := c.a.Users[c.user]; u == nil || !u.HasRole(r.Role) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	role := st.Roles[r.Role]
	if role == nil {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	resp := &pb.AuthRoleGetResponse{Header: h}
	if role.Name == mvcc.RootName { // as etcd: root may do anything
		resp.Perm = []*authpb.Permission{{PermType: authpb.READWRITE, Key: []byte{}, RangeEnd: []byte{0}}}
		return resp, nil
	}
	for _, p := range role.Perms {
		resp.Perm = append(resp.Perm, &authpb.Permission{PermType: authpb.Permission_Type(p.Type), Key: p.Key, RangeEnd: p.End})
	}
	return resp, nil
}

func (a *authServer) RoleList(ctx context.Context, _ *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	st, h, err := a.read(ctx, (*caller).admin)
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleListResponse{Header: h, Roles: st.RoleNames()}, nil
}
