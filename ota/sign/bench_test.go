package sign

import (
	"context"
	"fmt"
	"testing"
)

// go test -run '^$' -bench . ./ota/sign/
func BenchmarkSignVerify(b *testing.B) {
	ctx := context.Background()
	for _, alg := range []Algorithm{ECDSAP256, Ed25519} {
		s := mustKey(b, alg)
		for _, size := range []int{4 << 10, 1 << 20} {
			msg := make([]byte, size)
			sig, _ := s.Sign(ctx, msg)
			b.Run(fmt.Sprintf("%s/sign/%dKiB", alg, size>>10), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, err := s.Sign(ctx, msg); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("%s/verify/%dKiB", alg, size>>10), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					if err := s.Verifier().Verify(ctx, msg, sig); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkOpenEnvelope(b *testing.B) {
	ctx := context.Background()
	s := mustKey(b, ECDSAP256)
	env, _ := SignEnvelope(ctx, s, "application/vnd.edgefleet.desired+json", make([]byte, 2<<10))
	others := []*Verifier{mustKey(b, ECDSAP256).Verifier(), mustKey(b, ECDSAP256).Verifier(), s.Verifier()}
	for b.Loop() {
		if _, _, err := OpenEnvelope(ctx, env, "application/vnd.edgefleet.desired+json", others...); err != nil {
			b.Fatal(err)
		}
	}
}
