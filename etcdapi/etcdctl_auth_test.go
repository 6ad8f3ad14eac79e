package etcdapi_test

import (
	"testing"

	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/crypto/bcrypt"

	"github.com/ember-kv/ember/etcdapi"
)

// ctlAuthSteps is an auth session as an operator runs it with etcdctl: users, roles and
// permissions, auth enable, allowed and denied requests, a wrong password, auth disable.
var ctlAuthSteps = []ctlStep{
	{name: "user add root", args: []string{"user", "add", "root", "--new-user-password=rootpw"}},
	{name: "user add root again", args: []string{"user", "add", "root", "--new-user-password=x"}, fails: true},
	{name: "auth enable without the root role", args: []string{"auth", "enable"}}, // etcdctl adds and grants it
	{name: "auth status as root", args: []string{"--user=root:rootpw", "auth", "status"}},
	{name: "role add reader", args: []string{"--user=root:rootpw", "role", "add", "reader"}},
	{name: "grant read on a key", args: []string{"--user=root:rootpw", "role", "grant-permission", "reader", "read", "foo"}},
	{name: "grant readwrite on a prefix", args: []string{"--user=root:rootpw", "role", "grant-permission", "reader", "readwrite", "p/", "--prefix"}},
	{name: "grant write from a key", args: []string{"--user=root:rootpw", "role", "grant-permission", "reader", "write", "z", "--from-key"}},
	{name: "grant read on a range", args: []string{"--user=root:rootpw", "role", "grant-permission", "reader", "read", "a", "c"}},
	{name: "grant to a missing role", args: []string{"--user=root:rootpw", "role", "grant-permission", "nope", "read", "k"}, fails: true},
	{name: "role get reader", args: []string{"--user=root:rootpw", "role", "get", "reader"}},
	{name: "role get root", args: []string{"--user=root:rootpw", "role", "get", "root"}},
	{name: "user add alice", args: []string{"--user=root:rootpw", "user", "add", "alice", "--new-user-password=alicepw"}},
	{name: "user grant-role alice", args: []string{"--user=root:rootpw", "user", "grant-role", "alice", "reader"}},
	{name: "user get alice detail", args: []string{"--user=root:rootpw", "user", "get", "alice", "--detail"}},
	{name: "user list", args: []string{"--user=root:rootpw", "user", "list"}},
	{name: "role list json", args: []string{"--user=root:rootpw", "role", "list", "-w", "json"}},
	{name: "put foo as root", args: []string{"--user=root:rootpw", "put", "foo", "bar"}},
	{name: "get without a user", args: []string{"get", "foo"}, fails: true},
	{name: "get with a wrong password", args: []string{"--user=alice:wrong", "get", "foo"}, fails: true},
	{name: "get as alice", args: []string{"--user=alice:alicepw", "get", "foo"}},
	{name: "put as alice, read only", args: []string{"--user=alice:alicepw", "put", "foo", "x"}, fails: true},
	{name: "put under the prefix", args: []string{"--user=alice:alicepw", "put", "p/1", "one"}},
	{name: "get the prefix", args: []string{"--user=alice:alicepw", "get", "--prefix", "p/"}},
	{name: "get a key she may not read", args: []string{"--user=alice:alicepw", "get", "secret"}, fails: true},
	{name: "get from-key, write only", args: []string{"--user=alice:alicepw", "get", "--from-key", "z"}, fails: true},
	{name: "put from-key", args: []string{"--user=alice:alicepw", "put", "zz", "v"}},
	{name: "del in the range, read only", args: []string{"--user=alice:alicepw", "del", "b"}, fails: true},
	{name: "txn as alice", args: []string{"--user=alice:alicepw", "txn", "-i"},
		stdin: "value(\"foo\") = \"bar\"\n\nput p/2 two\n\nput foo never\n\n", fails: true},
	{name: "txn as alice, allowed", args: []string{"--user=alice:alicepw", "txn", "-i"},
		stdin: "value(\"foo\") = \"bar\"\n\nput p/2 two\n\nget foo\n\n"},
	{name: "compaction as alice", args: []string{"--user=alice:alicepw", "compaction", "2"}, fails: true},
	{name: "user list as alice", args: []string{"--user=alice:alicepw", "user", "list"}, fails: true},
	{name: "user get alice as alice", args: []string{"--user=alice:alicepw", "user", "get", "alice"}},
	{name: "auth disable as alice", args: []string{"--user=alice:alicepw", "auth", "disable"}, fails: true},
	{name: "delete root while enabled", args: []string{"--user=root:rootpw", "user", "delete", "root"}, fails: true},
	{name: "revoke the prefix", args: []string{"--user=root:rootpw", "role", "revoke-permission", "reader", "p/", "--prefix"}},
	{name: "put under the prefix after the revoke", args: []string{"--user=alice:alicepw", "put", "p/3", "three"}, fails: true},
	{name: "change alice's password", args: []string{"--user=root:rootpw", "user", "passwd", "alice", "--interactive=false"}, stdin: "newpw\n"},
	{name: "get with the old password", args: []string{"--user=alice:alicepw", "get", "foo"}, fails: true},
	{name: "get with the new password", args: []string{"--user=alice:newpw", "get", "foo"}},
	{name: "auth disable", args: []string{"--user=root:rootpw", "auth", "disable"}},
	{name: "get without a user after disable", args: []string{"get", "--prefix", ""}},
	{name: "auth status after disable", args: []string{"auth", "status"}},
}

// TestEtcdctl_Auth runs ctlAuthSteps with the real etcdctl against etcd and against ember; the
// outputs (error texts included) must match.
func TestEtcdctl_Auth(t *testing.T) {
	bin := etcdctl(t)
	etcd := runSteps(t, bin, startEtcd(t, func(c *embed.Config) { c.BcryptCost = uint(bcrypt.MinCost) }), ctlAuthSteps)
	ember := runSteps(t, bin, startEmberGateway(t, []etcdapi.Option{etcdapi.WithBcryptCost(bcrypt.MinCost)}), ctlAuthSteps)
	for i, st := range ctlAuthSteps {
		t.Run(st.name, func(t *testing.T) {
			if failed := etcd[i].exit != 0; failed != st.fails {
				t.Fatalf("etcd itself: exit status %d, want failure %v: the sequence is wrong\n%s", etcd[i].exit, st.fails, etcd[i])
			}
			if d := sameOutput(etcd[i], ember[i]); d != "" {
				t.Errorf("%s: ember differs from etcd %s\netcd:\n%s\nember:\n%s", st.command(), d, etcd[i], ember[i])
			}
		})
	}
}
