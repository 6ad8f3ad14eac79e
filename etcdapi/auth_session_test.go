package etcdapi_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/status"

	"github.com/ember-kv/ember/etcdapi"
)

// authTarget is one server of the auth session: its address and a client without credentials.
type authTarget struct {
	endpoint string
	anon     *clientv3.Client
	users    map[string]*clientv3.Client // clients authenticated as a user, made by login steps
}

func grpcErr(err error) string {
	if err == nil {
		return "ok"
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) { // what clientv3 makes of etcd's errors
		return fmt.Sprintf("error %v: %s", ee.Code(), ee.Error())
	}
	s, _ := status.FromError(err)
	return fmt.Sprintf("error %v: %s", s.Code(), s.Message())
}

// login connects as user, and keeps the client for the steps that follow.
func login(user, password string) func(context.Context, authTarget) string {
	return func(ctx context.Context, tg authTarget) string {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{tg.endpoint}, DialTimeout: ctlTimeout,
			Username: user, Password: password, Logger: zap.NewNop()})
		if err != nil {
			return "connect: " + grpcErr(err)
		}
		if old := tg.users[user]; old != nil {
			old.Close()
		}
		tg.users[user] = c
		return "connected"
	}
}

// as runs f with the client of user (logged in before) and prints its error, or its output.
func as(user string, f func(context.Context, *clientv3.Client) (string, error)) func(context.Context, authTarget) string {
	return func(ctx context.Context, tg authTarget) string {
		c := tg.anon
		if user != "" {
			c = tg.users[user]
		}
		out, err := f(ctx, c)
		if err != nil {
			return grpcErr(err)
		}
		return out
	}
}

func get(key string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) (string, error) {
	return func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Get(ctx, key, opts...)
		if err != nil {
			return "", err
		}
		var kvs []string
		for _, kv := range r.Kvs {
			kvs = append(kvs, string(kv.Key)+"="+string(kv.Value))
		}
		return "kvs " + strings.Join(kvs, ","), nil
	}
}

func put(key, val string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) (string, error) {
	return func(ctx context.Context, c *clientv3.Client) (string, error) {
		_, err := c.Put(ctx, key, val, opts...)
		return "put", err
	}
}

func del(key string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) (string, error) {
	return func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Delete(ctx, key, opts...)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("deleted %d", r.Deleted), nil
	}
}

func txn(cmps []clientv3.Cmp, then, els []clientv3.Op) func(context.Context, *clientv3.Client) (string, error) {
	return func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("succeeded %v", r.Succeeded), nil
	}
}

func watch(key string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) (string, error) {
	return func(ctx context.Context, c *clientv3.Client) (string, error) {
		wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 5*time.Second)
		defer cancel()
		wch := c.Watch(wctx, key, append(opts, clientv3.WithCreatedNotify())...)
		r, ok := <-wch
		if !ok {
			return "watch channel closed", nil
		}
		return fmt.Sprintf("created %v canceled %v err %v", r.Created, r.Canceled, r.Err()), nil
	}
}

func do(f func(context.Context, *clientv3.Client) error) func(context.Context, *clientv3.Client) (string, error) {
	return func(ctx context.Context, c *clientv3.Client) (string, error) { return "ok", f(ctx, c) }
}

// TestAuth_Session_AsEtcd runs an auth session step by step against ember's gateway and an
// embedded etcd: users, roles and permissions, auth enable, allowed and denied requests of
// every kind, a wrong password, a password change and auth disable. Every step's output (data,
// error codes and texts, auth revisions) must be etcd's.
func TestAuth_Session_AsEtcd(t *testing.T) {
	targets := map[string]authTarget{}
	for name, ep := range map[string]string{
		"ember": startEmberGateway(t, []etcdapi.Option{etcdapi.WithBcryptCost(bcrypt.MinCost)}),
		"etcd":  startEtcd(t, func(c *embed.Config) { c.BcryptCost = uint(bcrypt.MinCost) }),
	} {
		tg := authTarget{endpoint: ep, anon: newClient(t, ep), users: map[string]*clientv3.Client{}}
		t.Cleanup(func() {
			for _, c := range tg.users {
				c.Close()
			}
		})
		targets[name] = tg
	}
	authStatus := func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.AuthStatus(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("enabled %v revision %d", r.Enabled, r.AuthRevision), nil
	}
	roleGet := func(role string) func(context.Context, *clientv3.Client) (string, error) {
		return func(ctx context.Context, c *clientv3.Client) (string, error) {
			r, err := c.RoleGet(ctx, role)
			if err != nil {
				return "", err
			}
			var ps []string
			for _, p := range r.Perm {
				ps = append(ps, fmt.Sprintf("%v[%q,%q)", p.PermType, p.Key, p.RangeEnd))
			}
			return "perms " + strings.Join(ps, " "), nil
		}
	}
	userGet := func(user string) func(context.Context, *clientv3.Client) (string, error) {
		return func(ctx context.Context, c *clientv3.Client) (string, error) {
			r, err := c.UserGet(ctx, user)
			if err != nil {
				return "", err
			}
			return "roles " + strings.Join(r.Roles, ","), nil
		}
	}
	lists := func(ctx context.Context, c *clientv3.Client) (string, error) {
		u, err := c.UserList(ctx)
		if err != nil {
			return "", err
		}
		r, err := c.RoleList(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("users %v roles %v", u.Users, r.Roles), nil
	}
	grant := func(role, key, end string, typ clientv3.PermissionType) func(context.Context, *clientv3.Client) error {
		return func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.RoleGrantPermission(ctx, role, key, end, typ)
			return err
		}
	}
	leaseKeys := func(ctx context.Context, c *clientv3.Client) (string, error) {
		l, err := c.Grant(ctx, 60)
		if err != nil {
			return "", err
		}
		out := []string{"granted"}
		if _, err := c.Put(ctx, "p/leased", "v", clientv3.WithLease(l.ID)); err != nil {
			out = append(out, "put "+grpcErr(err))
		}
		if r, err := c.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys()); err != nil {
			out = append(out, "ttl "+grpcErr(err))
		} else {
			out = append(out, fmt.Sprintf("keys %q", r.Keys))
		}
		if _, err := c.KeepAliveOnce(ctx, l.ID); err != nil {
			out = append(out, "keepalive "+grpcErr(err))
		}
		if r, err := c.Leases(ctx); err != nil {
			out = append(out, "leases "+grpcErr(err))
		} else {
			out = append(out, fmt.Sprintf("%d leases", len(r.Leases)))
		}
		if _, err := c.Revoke(ctx, l.ID); err != nil {
			out = append(out, "revoke "+grpcErr(err))
		}
		return strings.Join(out, "; "), nil
	}
	// Root's lease with a key alice may read but not write.
	rootLease := func(ctx context.Context, tg authTarget) string {
		root, alice := tg.users["root"], tg.users["alice"]
		l, err := root.Grant(ctx, 60)
		if err != nil {
			return "grant " + grpcErr(err)
		}
		if _, err := root.Put(ctx, "foo", "leased", clientv3.WithLease(l.ID)); err != nil {
			return "put " + grpcErr(err)
		}
		out := []string{}
		_, err = alice.Put(ctx, "p/mine", "v", clientv3.WithLease(l.ID))
		out = append(out, "alice put on it: "+grpcErr(err))
		_, err = alice.TimeToLive(ctx, l.ID)
		out = append(out, "alice ttl: "+grpcErr(err))
		_, err = alice.Revoke(ctx, l.ID)
		out = append(out, "alice revoke: "+grpcErr(err))
		_, err = alice.KeepAliveOnce(ctx, l.ID)
		out = append(out, "alice keepalive: "+grpcErr(err))
		_, err = root.Revoke(ctx, l.ID)
		out = append(out, "root revoke: "+grpcErr(err))
		return strings.Join(out, "; ")
	}
	cmpFoo := clientv3.Compare(clientv3.Value("foo"), "=", "bar")
	cmpSecret := clientv3.Compare(clientv3.Version("secret"), ">", 0)
	steps := []asEtcdStep[authTarget]{
		{"status before any user", as("", authStatus)},
		{"add root", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserAdd(ctx, "root", "rootpw")
			return err
		}))},
		{"add root again", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserAdd(ctx, "root", "x"); return err }))},
		{"add an empty user", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserAdd(ctx, "", "x"); return err }))},
		{"enable without the root role", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.AuthEnable(ctx); return err }))},
		{"grant a missing role", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserGrantRole(ctx, "root", "nope")
			return err
		}))},
		{"grant root the root role before it exists", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserGrantRole(ctx, "root", "root")
			return err
		}))},
		{"add the root role", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleAdd(ctx, "root"); return err }))},
		{"add it again", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleAdd(ctx, "root"); return err }))},
		{"add an empty role", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleAdd(ctx, ""); return err }))},
		{"add role reader", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleAdd(ctx, "reader"); return err }))},
		{"grant read on a key", as("", do(grant("reader", "foo", "", clientv3.PermissionType(authpb.READ))))},
		{"grant readwrite on a prefix", as("", do(grant("reader", "p/", clientv3.GetPrefixRangeEnd("p/"), clientv3.PermissionType(authpb.READWRITE))))},
		{"grant read on a range", as("", do(grant("reader", "a", "c", clientv3.PermissionType(authpb.READ))))},
		{"grant write from a key", as("", do(grant("reader", "z", "\x00", clientv3.PermissionType(authpb.WRITE))))},
		{"change a permission's type", as("", do(grant("reader", "a", "c", clientv3.PermissionType(authpb.READWRITE))))},
		{"change it back", as("", do(grant("reader", "a", "c", clientv3.PermissionType(authpb.READ))))},
		{"grant an inverted range", as("", do(grant("reader", "b", "a", clientv3.PermissionType(authpb.READ))))},
		{"grant to a missing role", as("", do(grant("nope", "k", "", clientv3.PermissionType(authpb.READ))))},
		{"revoke a permission never granted", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.RoleRevokePermission(ctx, "reader", "q", "")
			return err
		}))},
		{"add alice", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserAdd(ctx, "alice", "alicepw")
			return err
		}))},
		{"grant alice reader", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserGrantRole(ctx, "alice", "reader")
			return err
		}))},
		{"grant it twice", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserGrantRole(ctx, "alice", "reader")
			return err
		}))},
		{"revoke a role not granted", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserRevokeRole(ctx, "alice", "root")
			return err
		}))},
		{"add a user without a password", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserAddWithOptions(ctx, "svc", "", &clientv3.UserAddOptions{NoPassword: true})
			return err
		}))},
		{"add a role to delete", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleAdd(ctx, "temp"); return err }))},
		{"grant it to svc", as("", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserGrantRole(ctx, "svc", "temp")
			return err
		}))},
		{"delete it: revoked from svc", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleDelete(ctx, "temp"); return err }))},
		{"svc", as("", userGet("svc"))},
		{"alice", as("", userGet("alice"))},
		{"a missing user", as("", userGet("nope"))},
		{"role reader", as("", roleGet("reader"))},
		{"role root", as("", roleGet("root"))},
		{"a missing role", as("", roleGet("nope"))},
		{"lists", as("", lists)},
		{"write foo", as("", put("foo", "bar"))},
		{"status before enable", as("", authStatus)},
		{"authenticate before enable", func(ctx context.Context, tg authTarget) string {
			_, err := tg.anon.Authenticate(ctx, "alice", "alicepw")
			return grpcErr(err)
		}},
		{"enable", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.AuthEnable(ctx); return err }))},
		{"enable again", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.AuthEnable(ctx); return err }))},
		{"get without a token", as("", get("foo"))},
		{"put without a token", as("", put("foo", "x"))},
		{"watch without a token", as("", watch("foo"))},
		{"status without a token", as("", authStatus)},
		{"members without a token", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.MemberList(ctx); return err }))},
		{"maintenance status without a token", func(ctx context.Context, tg authTarget) string {
			_, err := tg.anon.Status(ctx, tg.endpoint)
			return grpcErr(err)
		}},
		{"grant a lease without a token", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.Grant(ctx, 30); return err }))},
		{"wrong password", login("alice", "wrong")},
		{"unknown user", login("mallory", "x")},
		{"a user without a password", login("svc", "x")},
		{"login root", login("root", "rootpw")},
		{"login alice", login("alice", "alicepw")},
		{"alice gets foo", as("alice", get("foo"))},
		{"alice puts foo", as("alice", put("foo", "x"))},
		{"alice gets a key she may not read", as("alice", get("secret"))},
		{"alice puts under the prefix", as("alice", put("p/1", "one"))},
		{"alice puts with prevKV under the prefix", as("alice", put("p/2", "two", clientv3.WithPrevKV()))},
		{"alice gets the prefix", as("alice", get("p/", clientv3.WithPrefix()))},
		{"alice gets the range", as("alice", get("a", clientv3.WithRange("c")))},
		{"alice gets past the range", as("alice", get("a", clientv3.WithRange("d")))},
		{"alice gets everything", as("alice", get("", clientv3.WithFromKey()))},
		{"alice puts from-key", as("alice", put("zz", "v"))},
		{"alice gets from-key (write only)", as("alice", get("zz"))},
		{"alice puts zz with prevKV (write only)", as("alice", put("zz", "v", clientv3.WithPrevKV()))},
		{"alice deletes in the range (read only)", as("alice", del("b"))},
		{"alice deletes zz with prevKV", as("alice", del("zz", clientv3.WithPrevKV()))},
		{"alice deletes the prefix", as("alice", del("p/", clientv3.WithPrefix(), clientv3.WithPrevKV()))},
		{"alice's txn", as("alice", txn([]clientv3.Cmp{cmpFoo}, []clientv3.Op{clientv3.OpPut("p/t", "1")}, []clientv3.Op{clientv3.OpGet("foo")}))},
		{"alice's txn comparing a key she may not read", as("alice", txn([]clientv3.Cmp{cmpSecret}, []clientv3.Op{clientv3.OpPut("p/t", "2")}, nil))},
		{"alice's txn writing foo in the branch that does not run", as("alice", txn([]clientv3.Cmp{cmpFoo}, nil, []clientv3.Op{clientv3.OpPut("foo", "x")}))},
		{"alice's txn deleting with prevKV in the range", as("alice", txn(nil, []clientv3.Op{clientv3.OpDelete("b", clientv3.WithPrevKV())}, nil))},
		{"alice's nested txn", as("alice", txn(nil, []clientv3.Op{clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpGet("secret")}, nil)}, nil))},
		{"alice's allowed nested txn", as("alice", txn(nil, []clientv3.Op{clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpGet("foo"), clientv3.OpPut("zq", "v")}, nil)}, nil))},
		{"alice watches foo", as("alice", watch("foo"))},
		{"alice watches the prefix", as("alice", watch("p/", clientv3.WithPrefix()))},
		{"alice watches secret", as("alice", watch("secret"))},
		{"alice watches everything", as("alice", watch("", clientv3.WithFromKey()))},
		{"alice's lease", as("alice", leaseKeys)},
		{"root's lease on foo", rootLease},
		{"alice compacts", as("alice", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.Compact(ctx, 1); return err }))},
		{"alice lists members", as("alice", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.MemberList(ctx); return err }))},
		{"alice removes a member", as("alice", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.MemberRemove(ctx, 1); return err }))},
		{"alice's maintenance", func(ctx context.Context, tg authTarget) string {
			c := tg.users["alice"]
			var out []string
			_, err := c.Status(ctx, tg.endpoint)
			out = append(out, "status "+grpcErr(err))
			_, err = c.AlarmList(ctx)
			out = append(out, "alarms "+grpcErr(err))
			_, err = c.AlarmDisarm(ctx, &clientv3.AlarmMember{})
			out = append(out, "disarm "+grpcErr(err))
			_, err = c.HashKV(ctx, tg.endpoint, 0)
			out = append(out, "hashkv "+grpcErr(err))
			_, err = c.Defragment(ctx, tg.endpoint)
			out = append(out, "defrag "+grpcErr(err))
			_, err = c.MoveLeader(ctx, 1)
			out = append(out, "move leader "+grpcErr(err))
			rc, err := c.Snapshot(ctx)
			if err == nil {
				_, err = rc.Read(make([]byte, 1))
				rc.Close()
			}
			out = append(out, "snapshot "+grpcErr(err))
			return strings.Join(out, "; ")
		}},
		{"alice gets herself", as("alice", userGet("alice"))},
		{"alice gets root", as("alice", userGet("root"))},
		{"alice gets her role", as("alice", roleGet("reader"))},
		{"alice gets root's role", as("alice", roleGet("root"))},
		{"alice lists", as("alice", lists)},
		{"alice's auth status", as("alice", authStatus)},
		{"alice adds a user", as("alice", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserAdd(ctx, "eve", "x"); return err }))},
		{"alice disables auth", as("alice", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.AuthDisable(ctx); return err }))},
		{"root reads secret", as("root", get("secret"))},
		{"root's lists", as("root", lists)},
		{"root's auth status", as("root", authStatus)},
		{"root deletes root", as("root", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserDelete(ctx, "root"); return err }))},
		{"root deletes the root role", as("root", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.RoleDelete(ctx, "root"); return err }))},
		{"root revokes its root role", as("root", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserRevokeRole(ctx, "root", "root")
			return err
		}))},
		{"root revokes alice's prefix", as("root", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.RoleRevokePermission(ctx, "reader", "p/", clientv3.GetPrefixRangeEnd("p/"))
			return err
		}))},
		{"alice puts under the prefix after the revoke", as("alice", put("p/3", "three"))},
		{"root changes alice's password", as("root", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserChangePassword(ctx, "alice", "newpw")
			return err
		}))},
		{"alice's old session after the change", as("alice", get("foo"))},
		{"root empties svc's password (svc has none)", as("root", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserChangePassword(ctx, "svc", "")
			return err
		}))},
		{"root adds bob with an empty password", as("root", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserAdd(ctx, "bob", ""); return err }))},
		{"bob logs in with the empty password", func(ctx context.Context, tg authTarget) string {
			_, err := tg.anon.Authenticate(ctx, "bob", "")
			return grpcErr(err)
		}},
		{"root changes bob's password to empty", as("root", do(func(ctx context.Context, c *clientv3.Client) error {
			_, err := c.UserChangePassword(ctx, "bob", "")
			return err
		}))},
		{"bob logs in with the empty password again", func(ctx context.Context, tg authTarget) string {
			_, err := tg.anon.Authenticate(ctx, "bob", "")
			return grpcErr(err)
		}},
		{"alice logs in with the new password", login("alice", "newpw")},
		{"alice gets foo again", as("alice", get("foo"))},
		{"root's auth status after the changes", as("root", authStatus)},
		{"root disables auth", as("root", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.AuthDisable(ctx); return err }))},
		{"get without a token after disable", as("", get("secret"))},
		{"status after disable", as("", authStatus)},
		{"root's old session after disable", as("root", get("foo"))},
		{"delete root after disable", as("", do(func(ctx context.Context, c *clientv3.Client) error { _, err := c.UserDelete(ctx, "root"); return err }))},
		{"lists at the end", as("", lists)},
	}
	sameAsEtcd(t, targets, steps)
}
