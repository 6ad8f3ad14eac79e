package peer

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
)

func BenchmarkClient_Call(b *testing.B) {
	s := startRPC(b, "127.0.0.1:0", func(_ context.Context, _ uint8, req []byte) ([]byte, error) {
		return req, nil
	}, nil)
	req := make([]byte, 128)
	ctx := context.Background()

	b.Run("serial", func(b *testing.B) {
		c := newClient(b, ClientConfig{})
		b.ReportAllocs()
		b.SetBytes(int64(len(req)))
		for b.Loop() {
			if _, err := c.Call(ctx, s.addr, 1, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		c := newClient(b, ClientConfig{})
		b.ReportAllocs()
		b.SetBytes(int64(len(req)))
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Call(ctx, s.addr, 1, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkClient_CallWithToken is BenchmarkClient_Call over the cluster token's channel: TLS
// 1.3 with an ephemeral certificate, the admission proofs once per connection.
func BenchmarkClient_CallWithToken(b *testing.B) {
	m, clientTLS := startAdmissionMux(b, testToken, nil)
	srv := NewServer(m.Listen(ProtoRPC), func(_ context.Context, _ uint8, req []byte) ([]byte, error) {
		return req, nil
	}, nil)
	go srv.Serve()
	b.Cleanup(func() { srv.Close() })
	cfg := ClientConfig{TLS: clientTLS, Admission: NewAdmission(testToken), LocalID: "m1"}
	addr := m.Addr().String()
	req := make([]byte, 128)
	ctx := context.Background()

	b.Run("serial", func(b *testing.B) {
		c := newClient(b, cfg)
		b.ReportAllocs()
		b.SetBytes(int64(len(req)))
		for b.Loop() {
			if _, err := c.Call(ctx, addr, 1, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		c := newClient(b, cfg)
		b.ReportAllocs()
		b.SetBytes(int64(len(req)))
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Call(ctx, addr, 1, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkDial measures setting up one peer connection: TCP only, with the cluster token (TLS
// 1.3 handshake and the admission proofs), and with TLS alone, for comparison.
func BenchmarkDial(b *testing.B) {
	serverTLS, clientTLS := ephemeralTLS(b)
	for _, mode := range []struct {
		name   string
		server *tls.Config
		client *tls.Config
		adm    *Admission
	}{
		{"plain", nil, nil, nil},
		{"tls", serverTLS, clientTLS, nil},
		{"token", serverTLS, clientTLS, NewAdmission(testToken)},
	} {
		b.Run(mode.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			m := serveMux(b, NewMux(ln, mode.server, mode.adm, nil))
			l := m.Listen(ProtoRaft)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				c, err := Dial(ctx, nil, m.Addr().String(), ProtoRaft, mode.client, mode.adm)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
