package peer

import (
	"context"
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
