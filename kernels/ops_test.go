package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func ulpDiff(a, b float32) int64 {
	ia, ib := int64(int32(math.Float32bits(a))), int64(int32(math.Float32bits(b)))
	if ia < 0 {
		ia = math.MinInt32 - ia
	}
	if ib < 0 {
		ib = math.MinInt32 - ib
	}
	d := ia - ib
	if d < 0 {
		d = -d
	}
	return d
}

func TestExpVec(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	worst := int64(0)
	for i := 0; i < 200000; i++ {
		x := float32(r.Float64()*190 - 100) // [-100, 90)
		if x > 88 {
			x = float32(r.Float64() * 88)
		}
		got, want := expVec(x), float32(math.Exp(float64(x)))
		if want < 0x1p-126 { // subnormal results: absolute check
			if math.Abs(float64(got-want)) > 0x1p-140 {
				t.Fatalf("expVec(%v) = %v, want %v", x, got, want)
			}
			continue
		}
		if d := ulpDiff(got, want); d > worst {
			worst = d
		}
	}
	if worst > 2 {
		t.Errorf("expVec: worst error %d ulp (ggml documents 1.45 + 0.5)", worst)
	}
	for x, want := range map[float32]float32{0: 1, float32(math.Inf(-1)): 0, -200: 0, 100: float32(math.Inf(1))} {
		if got := expVec(x); got != want {
			t.Errorf("expVec(%v) = %v, want %v", x, got, want)
		}
	}
	if got := expVec(-1); ulpDiff(got, float32(math.Exp(-1))) > 2 {
		t.Errorf("expVec(-1) = %v", got)
	}
}

func TestRMSNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	x := mmRandRow(r, 100)
	w := mmRandRow(r, 100)
	out := make([]float32, 100)
	RMSNorm(out, x, w, 1e-5)
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	scale := 1 / math.Sqrt(ss/100+1e-5)
	for i := range x {
		want := float64(x[i]) * scale * float64(w[i])
		if math.Abs(float64(out[i])-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Fatalf("out[%d] = %v, want %v", i, out[i], want)
		}
	}
	in := append([]float32(nil), x...)
	RMSNorm(in, in, w, 1e-5) // aliasing
	if !sameF32Bits(in, out) {
		t.Error("in-place RMSNorm differs")
	}
}

func TestRope(t *testing.T) {
	const hd, nRot, heads = 16, 12, 3
	ts := RopeThetaScale(10000, nRot)
	if want := float32(math.Pow(10000, -2.0/nRot)); ts != want {
		t.Errorf("theta scale %v, want %v", ts, want)
	}
	cs := make([]float32, nRot)
	RopeCache(cs, 0, ts)
	for i := 0; i < nRot; i += 2 {
		if cs[i] != 1 || cs[i+1] != 0 {
			t.Fatalf("position 0: %v", cs)
		}
	}
	r := rand.New(rand.NewPCG(3, 3))
	for _, pos := range []int{1, 7, 100, 2047} {
		RopeCache(cs, pos, ts)
		x := mmRandRow(r, heads*hd)
		orig := append([]float32(nil), x...)
		Rope(x, heads, hd, cs)
		for h := 0; h < heads; h++ {
			theta := float64(float32(pos))
			for i := 0; i < hd; i += 2 {
				a, b := float64(orig[h*hd+i]), float64(orig[h*hd+i+1])
				wa, wb := a, b
				if i < nRot {
					c, s := math.Cos(theta), math.Sin(theta)
					wa, wb = a*c-b*s, a*s+b*c
					theta = float64(float32(theta) * ts)
				}
				ga, gb := float64(x[h*hd+i]), float64(x[h*hd+i+1])
				if math.Abs(ga-wa) > 1e-5*(1+math.Abs(wa)) || math.Abs(gb-wb) > 1e-5*(1+math.Abs(wb)) {
					t.Fatalf("pos %d head %d pair %d: (%v,%v), want (%v,%v)", pos, h, i, ga, gb, wa, wb)
				}
			}
		}
	}
}

func TestSoftmax(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, n := range []int{1, 3, 8, 13, 64, 100} {
		x := mmRandRow(r, n)
		for i := range x {
			x[i] *= 5
		}
		orig := append([]float32(nil), x...)
		const scale = 0.35
		Softmax(x, scale)
		mx := math.Inf(-1)
		for _, v := range orig {
			mx = math.Max(mx, float64(v)*scale)
		}
		var z float64
		for _, v := range orig {
			z += math.Exp(float64(v)*scale - mx)
		}
		var sum float64
		for i, v := range x {
			want := math.Exp(float64(orig[i])*scale-mx) / z
			if math.Abs(float64(v)-want) > 1e-6 {
				t.Fatalf("n=%d: p[%d] = %v, want %v", n, i, v, want)
			}
			sum += float64(v)
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Fatalf("n=%d: sum %v", n, sum)
		}
	}
	// padding behaviour: a row of n equals the first n of a row padded with
	// -Inf (masked) entries to a multiple of 8, as in llama.cpp's KV view
	x := []float32{0.5, -1, 2, 0.25, 3}
	padded := append(append([]float32(nil), x...), float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1)))
	Softmax(x, 1)
	Softmax(padded, 1)
	if !sameF32Bits(x, padded[:5]) || padded[5] != 0 {
		t.Errorf("padded %v vs %v", padded, x)
	}
}

func TestSwiGLUAndAdd(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, n := range []int{3, 8, 21, 172} {
		g, u := mmRandRow(r, n), mmRandRow(r, n)
		out := make([]float32, n)
		SwiGLU(out, g, u)
		for i := range g {
			x := float64(g[i])
			want := x / (1 + math.Exp(-x)) * float64(u[i])
			if math.Abs(float64(out[i])-want) > 1e-6*(1+math.Abs(want)) {
				t.Fatalf("n=%d i=%d: %v, want %v", n, i, out[i], want)
			}
		}
		if i := n - 1; n%8 != 0 && out[i] != SiLU(g[i])*u[i] {
			t.Errorf("tail element does not use the scalar path")
		}
		sum := make([]float32, n)
		Add(sum, g, u)
		for i := range sum {
			if sum[i] != g[i]+u[i] {
				t.Fatal("Add")
			}
		}
	}
}
