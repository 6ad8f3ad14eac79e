package etcdapi

import (
	"crypto/tls"
	"log/slog"
	"time"

	"golang.org/x/crypto/bcrypt"

	"google.golang.org/grpc"
)

// defaultMaxRequestBytes matches ember's default request limit (ember.WithMaxRequestBytes): the
// gateway cannot read the store's setting, so a store opened with another limit should be served
// with WithMaxRequestBytes set to the same value.
const defaultMaxRequestBytes = 3 << 19 // 1.5 MiB

// grpcOverheadBytes is the room etcd leaves above its request limit for gRPC framing, so that a
// request just over the limit reaches the store and fails with etcd's "request is too large".
const grpcOverheadBytes = 512 << 10

type config struct {
	tls             *tls.Config
	serverOpts      []grpc.ServerOption
	log             *slog.Logger
	maxRequestBytes int
	clusterID       uint64
	clientURLs      []string
	bcryptCost      int
	tokenTTL        time.Duration
}

// Option configures Register, Serve and NewClient.
type Option func(*config)

// WithTLS makes Serve accept TLS connections only, with this configuration.
func WithTLS(c *tls.Config) Option { return func(cfg *config) { cfg.tls = c } }

// WithServerOptions adds gRPC server options to the server Serve creates; they are applied after
// the gateway's own, so they override its limits.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(cfg *config) { cfg.serverOpts = append(cfg.serverOpts, opts...) }
}

// WithLogger logs through l; nil discards (the default).
func WithLogger(l *slog.Logger) Option { return func(cfg *config) { cfg.log = l } }

// WithMaxRequestBytes is the store's request limit (ember.WithMaxRequestBytes): Serve accepts
// messages up to it plus etcd's gRPC overhead, and fragmenting watches split responses at it.
func WithMaxRequestBytes(n int) Option { return func(cfg *config) { cfg.maxRequestBytes = n } }

// WithClusterID sets the cluster ID every response header carries. By default it is derived
// from the sorted member IDs the first time a header is built, which agrees between members as
// long as membership does not change between their first requests; set it explicitly to pin it.
func WithClusterID(id uint64) Option { return func(cfg *config) { cfg.clusterID = id } }

// WithClientURLs sets the client URLs MemberList reports for this member. Serve defaults them to
// its listener's address.
func WithClientURLs(urls ...string) Option {
	return func(cfg *config) { cfg.clientURLs = append([]string(nil), urls...) }
}

// WithBcryptCost is the bcrypt cost of the password hashes the Auth service makes (etcd's
// --bcrypt-cost); bcrypt.DefaultCost by default. A low cost makes tests fast; a cost outside
// bcrypt's range falls back to the default, as etcd's.
func WithBcryptCost(cost int) Option { return func(cfg *config) { cfg.bcryptCost = cost } }

// WithTokenTTL is how long a token Authenticate issues stays valid unused (etcd's
// --auth-token-ttl, 5 minutes by default); every use restarts it.
func WithTokenTTL(d time.Duration) Option { return func(cfg *config) { cfg.tokenTTL = d } }

func newConfig(opts []Option) *config {
	cfg := &config{maxRequestBytes: defaultMaxRequestBytes, bcryptCost: bcrypt.DefaultCost, tokenTTL: defaultTokenTTL}
	for _, o := range opts {
		o(cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	if cfg.bcryptCost < bcrypt.MinCost || cfg.bcryptCost > bcrypt.MaxCost {
		cfg.bcryptCost = bcrypt.DefaultCost
	}
	if cfg.tokenTTL <= 0 {
		cfg.tokenTTL = defaultTokenTTL
	}
	if cfg.maxRequestBytes <= 0 {
		cfg.maxRequestBytes = defaultMaxRequestBytes
	}
	return cfg
}
