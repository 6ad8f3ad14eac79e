package ember

import (
	"context"
	"fmt"

	"github.com/ember-kv/ember/internal/authctx"
	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// The in-process API is unauthenticated: the host is trusted. etcd's users, roles and
// permissions are served by the etcd gateway (etcdapi) alone, which reaches the replicated auth
// state through the methods below. They are not part of ember's API (API.md): their types are
// internal, so only ember's own packages can call them.

// GatewayAuth returns the auth state (etcd's auth store: users, roles, permissions, the enabled
// flag and auth revision) as this member has applied it, without waiting or copying: the etcd
// gateway checks every request against it, as etcd checks against its member's auth store.
// For etcdapi only.
func (s *Store) GatewayAuth() *mvcc.Auth {
	if a := s.fsm.auth.Load(); a != nil {
		return a
	}
	return s.fsm.view().st.Auth() // nothing applied yet
}

// GatewayAuthView returns the auth state as of a linearizable point, with the header of that
// point. For etcdapi only.
func (s *Store) GatewayAuthView(ctx context.Context) (*mvcc.Auth, ResponseHeader, error) {
	v, err := s.readView(ctx, false)
	if err != nil {
		return nil, ResponseHeader{}, err
	}
	return v.st.Auth(), s.header(v.st.Rev()), nil
}

// GatewayAuthPropose applies an auth change through the log, as etcd's auth requests. The
// change is refused with an auth code (wire.Code.IsAuth) as etcd's auth store refuses it; err
// is a write's error otherwise. A password in a is its bcrypt hash. For etcdapi only.
func (s *Store) GatewayAuthPropose(ctx context.Context, a *wire.Auth) (ResponseHeader, wire.Code, error) {
	res, err := s.propose(ctx, &wire.Command{Kind: wire.KindAuth, Auth: a})
	if res != nil && res.Code.IsAuth() {
		return s.header(res.Revision), res.Code, nil
	}
	if err != nil {
		return ResponseHeader{}, wire.CodeOK, err
	}
	return s.header(res.Revision), wire.CodeOK, nil
}

// GatewayKeys maps a client's key range to the store's, as the requests of a [Namespace] are
// mapped. The etcd gateway checks permissions on the store's keys, as etcd checks those a
// grpc-proxy --namespace forwards, so that the namespaces of one store, which share its auth
// state, do not share permissions. For etcdapi only.
func (s *Store) GatewayKeys(key, end []byte) ([]byte, []byte) {
	if s.ns == "" {
		return key, end
	}
	return s.nsKey(key), s.nsEnd(end)
}

// authCodeError is an auth refusal as an error, so that every code has one (codeError). Auth
// codes travel inside results, never as a peer's error.
type authCodeError struct{ code wire.Code }

func (e authCodeError) Error() string {
	if e.code == wire.CodeAuthOldRevision {
		return authctx.ErrOldRevision.Error()
	}
	return fmt.Sprintf("ember: auth change refused (code %d)", e.code)
}

// Is lets the etcd gateway recognize a write refused for an old auth revision.
func (e authCodeError) Is(target error) bool {
	return target == authctx.ErrOldRevision && e.code == wire.CodeAuthOldRevision
}
