package etcdapi

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// TestTokens_Void: a token is void once its user is deleted or changes password, once auth is
// disabled after it was issued, and once it expires, as etcd drops its simple tokens; it
// survives unrelated auth changes, and a re-enable after its issue.
func TestTokens_Void(t *testing.T) {
	users := func(rev uint64) map[string]*mvcc.User { return map[string]*mvcc.User{"u": {Name: "u", Rev: rev}} }
	tests := []struct {
		name    string
		a       *mvcc.Auth
		expired bool
		want    bool
	}{
		{"valid", &mvcc.Auth{Enabled: true, Rev: 5, Users: users(3)}, false, true},
		{"later unrelated changes", &mvcc.Auth{Enabled: true, Rev: 9, Users: users(3)}, false, true},
		{"issued after a disable and re-enable", &mvcc.Auth{Enabled: true, Rev: 5, DisabledRev: 5, Users: users(3)}, false, true},
		{"user deleted", &mvcc.Auth{Enabled: true, Rev: 6, Users: map[string]*mvcc.User{}}, false, false},
		{"password changed", &mvcc.Auth{Enabled: true, Rev: 6, Users: users(6)}, false, false},
		{"disabled since", &mvcc.Auth{Enabled: true, Rev: 7, DisabledRev: 6, Users: users(3)}, false, false},
		{"expired", &mvcc.Auth{Enabled: true, Rev: 5, Users: users(3)}, true, false},
	}
	for _, tc := range tests {
		ts := &tokens{ttl: time.Hour, m: map[string]*token{}}
		tok := ts.issue("u", 5)
		if tc.expired {
			ts.m[tok].expires = time.Now().Add(-time.Second)
		}
		if _, ok := ts.user(tok, tc.a); ok != tc.want {
			t.Errorf("%s: valid %v, want %v", tc.name, ok, tc.want)
		}
		if _, ok := ts.user("not-a-token", tc.a); ok {
			t.Errorf("%s: an unknown token is valid", tc.name)
		}
	}
}

// TestNewClient_UnauthenticatedWithAuthEnabled: NewClient serves the host, which is trusted, as
// the in-process API: with auth enabled through a network gateway, whose clients then need a
// user, it still does anything.
func TestNewClient_UnauthenticatedWithAuthEnabled(t *testing.T) {
	st := openStore(t)
	remote := serveTCP(t, st, WithBcryptCost(bcrypt.MinCost))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := remote.UserAdd(ctx, "root", "pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Put(ctx, "k", "v"); !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Fatalf("put over the network without a user: %v, want %v", err, rpctypes.ErrUserEmpty)
	}
	local := NewClient(st)
	defer local.Close()
	if _, err := local.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put through NewClient: %v", err)
	}
	if _, err := local.UserList(ctx); err != nil {
		t.Fatalf("user list through NewClient: %v", err)
	}
}

// TestTokens_SweepBounded: expired tokens do not accumulate: issuing sweeps them once the table
// has doubled, so it stays within twice the live tokens (and minSweep).
func TestTokens_SweepBounded(t *testing.T) {
	ts := &tokens{ttl: time.Hour, m: map[string]*token{}}
	for range 1000 {
		tok := ts.issue("u", 1)
		ts.m[tok].expires = time.Now().Add(-time.Second) // expired at once
	}
	if n := len(ts.m); n > 2*minSweep {
		t.Fatalf("%d tokens held after issuing 1000 that expired, want at most %d", n, 2*minSweep)
	}
}

// TestAuth_ChangedSinceAuthorized: a write authorized against an auth state that changes before
// it applies is refused with etcd's "revision of auth store is old" and applies nothing (the
// state machine checks the revision it was authorized at, as etcd's auth applier), a lease
// revocation too; a read is answered the same once the auth state changed while it was served.
// clientv3 then authenticates again and retries.
func TestAuth_ChangedSinceAuthorized(t *testing.T) {
	st := openStore(t)
	remote := serveTCP(t, st, WithBcryptCost(bcrypt.MinCost))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	lease, err := st.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{
		func() error { _, err := remote.UserAdd(ctx, "root", "pw"); return err },
		func() error { _, err := remote.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := remote.AuthEnable(ctx); return err },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	g := newGateway(st, newConfig(nil))
	c := &caller{a: st.GatewayAuth(), user: "root"} // checked now
	if err := c.stale(g); err != nil {
		t.Fatalf("nothing changed yet: %v", err)
	}
	if _, _, err := st.GatewayAuthPropose(ctx, &wire.Auth{Op: wire.AuthRoleAdd, Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Do(c.authorize(ctx), ember.OpPut("k", "v")); toGRPC(err) != rpctypes.ErrGRPCAuthOldRevision {
		t.Fatalf("put authorized before the change: %v, want %v", err, rpctypes.ErrGRPCAuthOldRevision)
	}
	if r, err := st.Get(ctx, "k"); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("the refused put applied: %v %+v", err, r)
	}
	if _, err := st.Revoke(c.authorize(ctx), lease.ID); toGRPC(err) != rpctypes.ErrGRPCAuthOldRevision {
		t.Fatalf("revoke authorized before the change: %v, want %v", err, rpctypes.ErrGRPCAuthOldRevision)
	}
	if err := c.stale(g); err != rpctypes.ErrGRPCAuthOldRevision {
		t.Fatalf("read checked before the change: %v, want %v", err, rpctypes.ErrGRPCAuthOldRevision)
	}
	c = &caller{a: st.GatewayAuth(), user: "root"}
	if _, err := st.Do(c.authorize(ctx), ember.OpPut("k", "v")); err != nil {
		t.Fatalf("put authorized at the current revision: %v", err)
	}
}

// BenchmarkGateway_CheckPut is what the permission check adds to a Put: with auth disabled (an
// atomic load), and enabled for a user with a token and one role.
func BenchmarkGateway_CheckPut(b *testing.B) {
	st := openStore(b)
	g := newGateway(st, newConfig([]Option{WithBcryptCost(bcrypt.MinCost)}))
	a := &authServer{g: g}
	ctx := context.Background()
	r := &pb.PutRequest{Key: []byte("p/k"), Value: []byte("v")}
	b.Run("disabled", func(b *testing.B) {
		for b.Loop() {
			if _, err := g.checkPut(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, req := range []any{
		&pb.AuthUserAddRequest{Name: "root", Password: "pw"},
		&pb.AuthUserGrantRoleRequest{User: "root", Role: "root"},
		&pb.AuthRoleAddRequest{Name: "rw"},
		&pb.AuthRoleGrantPermissionRequest{Name: "rw", Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte("p/"), RangeEnd: []byte("p0")}},
		&pb.AuthUserAddRequest{Name: "u", Password: "pw"},
		&pb.AuthUserGrantRoleRequest{User: "u", Role: "rw"},
		&pb.AuthEnableRequest{},
	} {
		var err error
		switch req := req.(type) {
		case *pb.AuthUserAddRequest:
			_, err = a.UserAdd(ctx, req)
		case *pb.AuthUserGrantRoleRequest:
			_, err = a.UserGrantRole(ctx, req)
		case *pb.AuthRoleAddRequest:
			_, err = a.RoleAdd(ctx, req)
		case *pb.AuthRoleGrantPermissionRequest:
			_, err = a.RoleGrantPermission(ctx, req)
		case *pb.AuthEnableRequest:
			_, err = a.AuthEnable(ctx, req)
		}
		if err != nil {
			b.Fatalf("%T: %v", req, err)
		}
	}
	tok, err := a.Authenticate(ctx, &pb.AuthenticateRequest{Name: "u", Password: "pw"})
	if err != nil {
		b.Fatal(err)
	}
	uctx := metadata.NewIncomingContext(ctx, metadata.Pairs(rpctypes.TokenFieldNameGRPC, tok.Token))
	b.Run("enabled", func(b *testing.B) {
		for b.Loop() {
			if _, err := g.checkPut(uctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPermissions_Requests: the permission each request needs, as etcd's auth applier checks
// it: a Range reads its range, a Put writes its key (and reads it for prevKV), a DeleteRange
// writes its range (and reads it for prevKV), a Txn reads every compare's range and needs every
// op of both branches, nested ones included.
func TestPermissions_Requests(t *testing.T) {
	ap := mvcc.NewApplier(nil, 1<<20)
	for i, c := range []*wire.Auth{
		{Op: wire.AuthRoleAdd, Name: "r"},
		{Op: wire.AuthRoleGrantPermission, Name: "r", Key: []byte("ro"), PermType: wire.PermRead},
		{Op: wire.AuthRoleGrantPermission, Name: "r", Key: []byte("wo/"), End: []byte("wo0"), PermType: wire.PermWrite},
		{Op: wire.AuthRoleGrantPermission, Name: "r", Key: []byte("rw/"), End: []byte("rw0"), PermType: wire.PermReadWrite},
		{Op: wire.AuthRoleGrantPermission, Name: "r", Key: []byte("z"), End: []byte{0}, PermType: wire.PermRead},
		{Op: wire.AuthUserAdd, Name: "u"},
		{Op: wire.AuthUserGrantRole, Name: "u", Role: "r"},
		{Op: wire.AuthUserAdd, Name: "root"},
		{Op: wire.AuthUserGrantRole, Name: "root", Role: "root"},
	} {
		out, err := ap.Apply(uint64(i+1), (&wire.Command{Kind: wire.KindAuth, Auth: c}).Marshal(nil))
		if err != nil || out.Result.Code != wire.CodeOK {
			t.Fatalf("%+v: %v, code %d", c, err, out.Result.Code)
		}
	}
	a := ap.State().Auth()
	g := &gateway{}
	ctx := context.Background()
	rng := func(k, e string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k), RangeEnd: []byte(e)}}}
	}
	put := func(k string, prev bool) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), PrevKv: prev}}}
	}
	del := func(k, e string, prev bool) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(e), PrevKv: prev}}}
	}
	cmp := func(k, e string) *pb.Compare { return &pb.Compare{Key: []byte(k), RangeEnd: []byte(e)} }
	nested := func(ops ...*pb.RequestOp) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Failure: ops}}}
	}
	tests := []struct {
		name  string
		user  string
		check func(*caller) error
		want  error
	}{
		{"range a key", "u", func(c *caller) error { return c.permitted([]byte("ro"), nil, false) }, nil},
		{"range a prefix", "u", func(c *caller) error { return c.permitted([]byte("rw/"), []byte("rw0"), false) }, nil},
		{"range past a prefix", "u", func(c *caller) error { return c.permitted([]byte("rw/"), []byte("rw1"), false) }, rpctypes.ErrGRPCPermissionDenied},
		{"range from a key", "u", func(c *caller) error { return c.permitted([]byte("zz"), []byte{0}, false) }, nil},
		{"range a write-only prefix", "u", func(c *caller) error { return c.permitted([]byte("wo/a"), nil, false) }, rpctypes.ErrGRPCPermissionDenied},
		{"put a read-only key", "u", func(c *caller) error { return g.putPermitted(ctx, c, &pb.PutRequest{Key: []byte("ro")}) }, rpctypes.ErrGRPCPermissionDenied},
		{"put write-only", "u", func(c *caller) error { return g.putPermitted(ctx, c, &pb.PutRequest{Key: []byte("wo/a")}) }, nil},
		{"put write-only with prevKV", "u", func(c *caller) error {
			return g.putPermitted(ctx, c, &pb.PutRequest{Key: []byte("wo/a"), PrevKv: true})
		}, rpctypes.ErrGRPCPermissionDenied},
		{"delete a write-only range", "u", func(c *caller) error {
			return deletePermitted(c, &pb.DeleteRangeRequest{Key: []byte("wo/"), RangeEnd: []byte("wo0")})
		}, nil},
		{"delete it with prevKV", "u", func(c *caller) error {
			return deletePermitted(c, &pb.DeleteRangeRequest{Key: []byte("wo/"), RangeEnd: []byte("wo0"), PrevKv: true})
		}, rpctypes.ErrGRPCPermissionDenied},
		{"txn: readable compares, allowed ops", "u", func(c *caller) error {
			return g.txnPermitted(ctx, c, &pb.TxnRequest{Compare: []*pb.Compare{cmp("ro", ""), cmp("rw/", "rw0")},
				Success: []*pb.RequestOp{put("rw/a", true), rng("z", "\x00")}, Failure: []*pb.RequestOp{del("wo/a", "", false)}})
		}, nil},
		{"txn: a compare on a write-only key", "u", func(c *caller) error {
			return g.txnPermitted(ctx, c, &pb.TxnRequest{Compare: []*pb.Compare{cmp("wo/a", "")}})
		}, rpctypes.ErrGRPCPermissionDenied},
		{"txn: a denied op in the failure branch", "u", func(c *caller) error {
			return g.txnPermitted(ctx, c, &pb.TxnRequest{Success: []*pb.RequestOp{put("rw/a", false)}, Failure: []*pb.RequestOp{put("ro", false)}})
		}, rpctypes.ErrGRPCPermissionDenied},
		{"txn: a denied op nested", "u", func(c *caller) error {
			return g.txnPermitted(ctx, c, &pb.TxnRequest{Success: []*pb.RequestOp{nested(rng("secret", ""))}})
		}, rpctypes.ErrGRPCPermissionDenied},
		{"txn: a delete with prevKV on a write-only range", "u", func(c *caller) error {
			return g.txnPermitted(ctx, c, &pb.TxnRequest{Success: []*pb.RequestOp{del("wo/a", "", true)}})
		}, rpctypes.ErrGRPCPermissionDenied},
		{"no token", "", func(c *caller) error { return c.permitted([]byte("ro"), nil, false) }, rpctypes.ErrGRPCUserEmpty},
		{"root anything", "root", func(c *caller) error {
			return g.txnPermitted(ctx, c, &pb.TxnRequest{Compare: []*pb.Compare{cmp("secret", "")}, Success: []*pb.RequestOp{del("", "\x00", true)}})
		}, nil},
		{"admin as a user", "u", func(c *caller) error { return c.admin() }, rpctypes.ErrGRPCPermissionDenied},
		{"admin without a token", "", func(c *caller) error { return c.admin() }, rpctypes.ErrGRPCUserEmpty},
		{"admin as root", "root", func(c *caller) error { return c.admin() }, nil},
		{"auth disabled", "-", func(*caller) error { return (*caller)(nil).permitted([]byte("secret"), nil, true) }, nil},
	}
	for _, tc := range tests {
		if got := tc.check(&caller{a: a, user: tc.user}); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAuth_Namespaces: a gateway serving a namespace checks permissions on the store's keys, as
// etcd checks the keys a grpc-proxy --namespace forwards: a permission on "a/foo" lets a user
// write foo through the gateway of namespace a/, not through that of b/, although both share the
// store's users and roles.
func TestAuth_Namespaces(t *testing.T) {
	st := openStore(t)
	ga := serveTCP(t, ember.Namespace(st, "a/"), WithBcryptCost(bcrypt.MinCost))
	gb := serveTCP(t, ember.Namespace(st, "b/"), WithBcryptCost(bcrypt.MinCost))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, f := range []func() error{
		func() error { _, err := ga.UserAdd(ctx, "root", "pw"); return err },
		func() error { _, err := ga.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := ga.RoleAdd(ctx, "r"); return err },
		func() error {
			_, err := ga.RoleGrantPermission(ctx, "r", "a/foo", "", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := ga.UserAdd(ctx, "u", "pw"); return err },
		func() error { _, err := ga.UserGrantRole(ctx, "u", "r"); return err },
		func() error { _, err := ga.AuthEnable(ctx); return err },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	as := func(gw *clientv3.Client) *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: gw.Endpoints(), DialTimeout: 5 * time.Second,
			Username: "u", Password: "pw", Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	if _, err := as(ga).Put(ctx, "foo", "v"); err != nil {
		t.Fatalf("put foo through namespace a/: %v", err)
	}
	if _, err := as(gb).Put(ctx, "foo", "v"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("put foo through namespace b/: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	if r, err := st.Get(ctx, "", ember.WithFromKey()); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Key) != "a/foo" {
		t.Fatalf("store after the puts: %v %+v", err, r)
	}
}

// TestAuth_Tokens_Expire: a token unused for its TTL is void ("invalid auth token", which makes
// clientv3 authenticate again), and every use restarts its TTL, as etcd's simple tokens.
func TestAuth_Tokens_Expire(t *testing.T) {
	const ttl = 300 * time.Millisecond
	anon := serveTCP(t, openStore(t), WithBcryptCost(bcrypt.MinCost), WithTokenTTL(ttl))
	ep := anon.Endpoints()[0]
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, f := range []func() error{
		func() error { _, err := anon.UserAdd(ctx, "root", "pw"); return err },
		func() error { _, err := anon.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := anon.AuthEnable(ctx); return err },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	// A plain connection: clientv3's retries an invalid token for seconds.
	conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	getWith := func(token string) error {
		_, err := kv.Range(metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, token), &pb.RangeRequest{Key: []byte("k")})
		return err
	}
	used, err := anon.Authenticate(ctx, "root", "pw")
	if err != nil {
		t.Fatal(err)
	}
	idle, err := anon.Authenticate(ctx, "root", "pw")
	if err != nil {
		t.Fatal(err)
	}
	for range 8 { // 2 TTLs, the used token never idle for more than a quarter of one
		if err := getWith(used.Token); err != nil {
			t.Fatalf("get with a token in use: %v", err)
		}
		time.Sleep(ttl / 4)
	}
	if err := getWith(idle.Token); rpctypes.Error(err) != rpctypes.ErrInvalidAuthToken {
		t.Fatalf("get with a token idle for 2 TTLs: %v, want %v", err, rpctypes.ErrInvalidAuthToken)
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second,
		Username: "root", Password: "pw", Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.Get(ctx, "k"); err != nil {
		t.Fatalf("get through clientv3, which authenticates: %v", err)
	}
	time.Sleep(2 * ttl)
	if _, err := root.Get(ctx, "k"); err != nil {
		t.Fatalf("get through clientv3 once its token expired (it authenticates again): %v", err)
	}
}
