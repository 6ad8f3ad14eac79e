package etcdapi

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/authctx"
)

// The permission checks of every service, as etcd makes them (server/etcdserver/apply's auth
// applier, v3_server.go and api/v3rpc). They check against this member's applied auth state
// before the request is served, and return the caller (nil when auth is disabled). As in etcd,
// a write carries the auth revision it was authorized at (authorize), and the state machine
// refuses it if the auth state changed before it applied; a read is answered "revision of auth
// store is old" if the auth state changed while it was served (stale). clientv3 then
// authenticates again and retries.

// authorize returns ctx carrying the auth revision c was checked at, for a write.
func (c *caller) authorize(ctx context.Context) context.Context {
	if c == nil {
		return ctx
	}
	return authctx.WithRev(ctx, c.a.Rev)
}

// stale is etcd's check after a read: the auth state must not have changed since c was
// checked.
func (c *caller) stale(g *gateway) error {
	if c != nil && g.st.GatewayAuth().Rev != c.a.Rev {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	return nil
}

// checkAdmin refuses a caller without the root role, for the requests etcd reserves to admins.
func (g *gateway) checkAdmin(ctx context.Context) error {
	c, err := g.caller(ctx)
	if err != nil {
		return err
	}
	return c.admin()
}

// checkKnown refuses a request without a token, for those etcd serves to any user.
func (g *gateway) checkKnown(ctx context.Context) error {
	c, err := g.caller(ctx)
	if err != nil {
		return err
	}
	return c.known()
}

// checkRange is etcd's check of a Range.
func (g *gateway) checkRange(ctx context.Context, r *pb.RangeRequest) (*caller, error) {
	c, err := g.caller(ctx)
	if err != nil {
		return nil, err
	}
	return c, c.permitted(r.Key, r.RangeEnd, false)
}

// checkPut is etcd's check of a Put.
func (g *gateway) checkPut(ctx context.Context, r *pb.PutRequest) (*caller, error) {
	c, err := g.caller(ctx)
	if err != nil || c == nil {
		return nil, err
	}
	return c, g.putPermitted(ctx, c, r)
}

// checkDelete is etcd's check of a DeleteRange.
func (g *gateway) checkDelete(ctx context.Context, r *pb.DeleteRangeRequest) (*caller, error) {
	c, err := g.caller(ctx)
	if err != nil {
		return nil, err
	}
	return c, deletePermitted(c, r)
}

// checkTxn is etcd's check of a Txn: every compare and every op of both branches, nested
// transactions included, whichever branch runs.
func (g *gateway) checkTxn(ctx context.Context, r *pb.TxnRequest) (*caller, error) {
	c, err := g.caller(ctx)
	if err != nil || c == nil {
		return nil, err
	}
	return c, g.txnPermitted(ctx, c, r)
}

// readOnly reports whether r writes nothing, in any branch.
func readOnly(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil ||
				op.GetRequestTxn() != nil && !readOnly(op.GetRequestTxn()) {
				return false
			}
		}
	}
	return true
}

func (g *gateway) putPermitted(ctx context.Context, c *caller, r *pb.PutRequest) error {
	if err := c.permitted(r.Key, nil, true); err != nil {
		return err
	}
	// A lease whose keys the caller may not all write may not take another key: the caller
	// could not revoke it.
	if err := g.leaseKeysPermitted(ctx, c, r.Lease, true); err != nil {
		return err
	}
	if r.PrevKv {
		return c.permitted(r.Key, nil, false)
	}
	return nil
}

func deletePermitted(c *caller, r *pb.DeleteRangeRequest) error {
	if err := c.permitted(r.Key, r.RangeEnd, true); err != nil {
		return err
	}
	if r.PrevKv {
		return c.permitted(r.Key, r.RangeEnd, false)
	}
	return nil
}

func (g *gateway) txnPermitted(ctx context.Context, c *caller, r *pb.TxnRequest) error {
	for _, cmp := range r.Compare {
		if err := c.permitted(cmp.Key, cmp.RangeEnd, false); err != nil {
			return err
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			var err error
			switch {
			case op.GetRequestRange() != nil:
				err = c.permitted(op.GetRequestRange().Key, op.GetRequestRange().RangeEnd, false)
			case op.GetRequestPut() != nil:
				err = g.putPermitted(ctx, c, op.GetRequestPut())
			case op.GetRequestDeleteRange() != nil:
				d := op.GetRequestDeleteRange()
				// etcd checks a txn's delete the other way round: its previous values first.
				if d.PrevKv {
					err = c.permitted(d.Key, d.RangeEnd, false)
				}
				if err == nil {
					err = c.permitted(d.Key, d.RangeEnd, true)
				}
			case op.GetRequestTxn() != nil:
				err = g.txnPermitted(ctx, c, op.GetRequestTxn())
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// leaseKeysPermitted is etcd's check of a lease's attached keys: nothing for an admin or an
// unknown lease, else every key must be permitted (write, or read).
func (g *gateway) leaseKeysPermitted(ctx context.Context, c *caller, id int64, write bool) error {
	if c == nil || id == 0 || c.admin() == nil {
		return nil
	}
	res, err := g.st.TimeToLive(ctx, ember.LeaseID(id), ember.WithAttachedKeys())
	if errors.Is(err, ember.ErrLeaseNotFound) || err == nil && res.TTL < 0 {
		return nil
	}
	if err != nil {
		return toGRPC(err)
	}
	for _, k := range res.Keys {
		if err := c.permitted(k, nil, write); err != nil {
			return err
		}
	}
	return nil
}

// checkLease is etcd's check of a revocation or renewal (write) or of a TimeToLive (read): a
// user, and, unless an admin, permission on every attached key.
func (g *gateway) checkLease(ctx context.Context, id int64, write bool) (*caller, error) {
	c, err := g.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.known(); err != nil {
		return nil, err
	}
	return c, g.leaseKeysPermitted(ctx, c, id, write)
}

// checkLeaseLeases is etcd's check of LeaseLeases: a user, and, unless an admin, read
// permission on every key attached to any lease.
func (g *gateway) checkLeaseLeases(ctx context.Context, ids []ember.LeaseID) error {
	c, err := g.caller(ctx)
	if err != nil {
		return err
	}
	if err := c.known(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := g.leaseKeysPermitted(ctx, c, int64(id), false); err != nil {
			return err
		}
	}
	return nil
}

// watchRefusal is the cancel reason of a watch etcd refuses to create, or "" if it may be.
func (g *gateway) watchRefusal(ctx context.Context, creq *pb.WatchCreateRequest) string {
	c, err := g.caller(ctx)
	if err == nil {
		err = c.permitted(creq.Key, creq.RangeEnd, false)
	}
	switch {
	case err == nil:
		return ""
	case errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken), errors.Is(err, rpctypes.ErrGRPCUserEmpty):
		return err.Error()
	}
	return rpctypes.ErrGRPCPermissionDenied.Error()
}
