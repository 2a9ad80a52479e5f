package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttnKernels pins the assembly attention products to the pure-Go
// specification, bit for bit, and checks the specification against a
// float64 reference.
func TestAttnKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	backends := []*Backend{GenericBackend()}
	if be, err := BackendByName(AVX2BackendName); err == nil {
		backends = append(backends, be)
	}
	for _, hd := range []int{8, 16, 64, 72, 80, 128, 12} {
		for _, nq := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9} {
			for _, n := range []int{1, 5, 8, 31, 32, 33, 100, 257} {
				stride := (n+31)&^31 + 8*r.IntN(2)
				q := gaussRow(r, nq*hd, 1)
				kT := gaussRow(r, hd*stride, 1)
				want := make([]float32, nq*stride)
				AttnScores(want, stride, q, nq, hd, kT, stride, n)
				for g := 0; g < nq; g++ { // the spec against float64
					for p := 0; p < n; p++ {
						var s float64
						for d := 0; d < hd; d++ {
							s += float64(q[g*hd+d]) * float64(kT[d*stride+p])
						}
						if math.Abs(float64(want[g*stride+p])-s) > 1e-4*math.Sqrt(float64(hd)) {
							t.Fatalf("AttnScores hd=%d: %g, float64 %g", hd, want[g*stride+p], s)
						}
					}
				}
				prob := gaussRow(r, nq*stride, 1)
				vStride := hd + 8*r.IntN(2)
				v := gaussRow(r, n*vStride, 1)
				wantV := make([]float32, nq*hd)
				AttnValues(wantV, prob, stride, nq, v, vStride, hd, n)
				for _, be := range backends {
					got := make([]float32, nq*stride)
					be.AttnScores(got, stride, q, nq, hd, kT, stride, n)
					for g := 0; g < nq; g++ {
						for p := 0; p < n; p++ {
							if i := g*stride + p; !sameBits(got[i], want[i]) {
								t.Fatalf("%s AttnScores hd=%d nq=%d n=%d: [%d][%d] %g, go %g", be.Name(), hd, nq, n, g, p, got[i], want[i])
							}
						}
					}
					gotV := make([]float32, nq*hd)
					be.AttnValues(gotV, prob, stride, nq, v, vStride, hd, n)
					if i := firstDiff(F32Bytes(gotV), F32Bytes(wantV)); i >= 0 {
						t.Fatalf("%s AttnValues hd=%d nq=%d n=%d: element %d: %g, go %g", be.Name(), hd, nq, n, i/4, gotV[i/4], wantV[i/4])
					}
				}

				// Binary16 caches: the float32 arithmetic on the widened
				// elements, bit for bit, in the spec and in every backend.
				kT16, v16 := toF16(kT), toF16(v)
				want16 := make([]float32, nq*stride)
				AttnScores(want16, stride, q, nq, hd, fromF16(kT16), stride, n)
				wantV16 := make([]float32, nq*hd)
				AttnValues(wantV16, prob, stride, nq, fromF16(v16), vStride, hd, n)
				spec := make([]float32, nq*stride)
				AttnScoresF16(spec, stride, q, nq, hd, kT16, stride, n)
				specV := make([]float32, nq*hd)
				AttnValuesF16(specV, prob, stride, nq, v16, vStride, hd, n)
				if !sameScores(spec, want16, nq, stride, n) || firstDiff(F32Bytes(specV), F32Bytes(wantV16)) >= 0 {
					t.Fatalf("F16 spec hd=%d nq=%d n=%d differs from the float32 one on widened elements", hd, nq, n)
				}
				for _, be := range backends {
					got := make([]float32, nq*stride)
					be.AttnScoresF16(got, stride, q, nq, hd, kT16, stride, n)
					if !sameScores(got, want16, nq, stride, n) {
						t.Fatalf("%s AttnScoresF16 hd=%d nq=%d n=%d differs from the spec", be.Name(), hd, nq, n)
					}
					gotV := make([]float32, nq*hd)
					be.AttnValuesF16(gotV, prob, stride, nq, v16, vStride, hd, n)
					if i := firstDiff(F32Bytes(gotV), F32Bytes(wantV16)); i >= 0 {
						t.Fatalf("%s AttnValuesF16 hd=%d nq=%d n=%d: element %d: %g, spec %g", be.Name(), hd, nq, n, i/4, gotV[i/4], wantV16[i/4])
					}
				}
			}
		}
	}
}

func toF16(x []float32) []uint16 {
	h := make([]uint16, len(x))
	for i, v := range x {
		h[i] = FP32ToFP16(v)
	}
	return h
}

func fromF16(h []uint16) []float32 {
	x := make([]float32, len(h))
	for i, v := range h {
		x[i] = FP16ToFP32(v)
	}
	return x
}

// sameScores compares the n computed positions of nq score rows.
func sameScores(a, b []float32, nq, stride, n int) bool {
	for g := 0; g < nq; g++ {
		for p := 0; p < n; p++ {
			if !sameBits(a[g*stride+p], b[g*stride+p]) {
				return false
			}
		}
	}
	return true
}

func BenchmarkAttn(b *testing.B) {
	be, _ := BackendByName("")
	r := rand.New(rand.NewPCG(45, 46))
	const hd, nq, n, stride = 64, 4, 256, 256
	q := gaussRow(r, nq*hd, 1)
	kT := gaussRow(r, hd*stride, 1)
	v := gaussRow(r, n*hd, 1)
	dst := make([]float32, nq*stride)
	out := make([]float32, nq*hd)
	b.Run("scores", func(b *testing.B) {
		for b.Loop() {
			be.AttnScores(dst, stride, q, nq, hd, kT, stride, n)
		}
	})
	b.Run("values", func(b *testing.B) {
		for b.Loop() {
			be.AttnValues(out, dst, stride, nq, v, hd, hd, n)
		}
	})
	// A long context from memory: a TinyLlama-1.1B layer's group (8 query
	// heads per KV head) over 2048 positions, caches of 32 such KV heads
	// cycled so that each call reads its cache from beyond L2.
	const lhd, lnq, ln, heads = 64, 8, 2048, 32
	lq := gaussRow(r, lnq*lhd, 1)
	ldst := make([]float32, lnq*ln)
	lout := make([]float32, lnq*lhd)
	k32 := make([][]float32, heads)
	v32 := make([][]float32, heads)
	k16 := make([][]uint16, heads)
	v16 := make([][]uint16, heads)
	for i := range heads {
		k32[i], v32[i] = gaussRow(r, lhd*ln, 1), gaussRow(r, ln*lhd, 1)
		k16[i], v16[i] = toF16(k32[i]), toF16(v32[i])
	}
	b.Run("long/F32", func(b *testing.B) {
		b.SetBytes(int64(2 * 4 * lhd * ln))
		i := 0
		for b.Loop() {
			be.AttnScores(ldst, ln, lq, lnq, lhd, k32[i%heads], ln, ln)
			be.AttnValues(lout, ldst, ln, lnq, v32[i%heads], lhd, lhd, ln)
			i++
		}
	})
	b.Run("long/F16", func(b *testing.B) {
		b.SetBytes(int64(2 * 2 * lhd * ln))
		i := 0
		for b.Loop() {
			be.AttnScoresF16(ldst, ln, lq, lnq, lhd, k16[i%heads], ln, ln)
			be.AttnValuesF16(lout, ldst, ln, lnq, v16[i%heads], lhd, lhd, ln)
			i++
		}
	})
}
