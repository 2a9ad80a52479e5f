package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestRopeCacheExt(t *testing.T) {
	const nRot = 16
	ts := RopeThetaScale(10000, nRot)
	a, b := make([]float32, nRot), make([]float32, nRot)
	for _, pos := range []int{0, 1, 5, 300, 4095} {
		// no factors, scale 1, mscale 1: identical to RopeCache
		RopeCache(a, pos, ts)
		RopeCacheExt(b, pos, ts, 1, 1, nil)
		if !sameF32Bits(a, b) {
			t.Fatalf("pos %d: RopeCacheExt(no factors) %v != RopeCache %v", pos, b, a)
		}
		ff := make([]float32, nRot/2)
		for i := range ff {
			ff[i] = 1 + float32(i)*0.5
		}
		const fs, ms = 0.25, 1.19
		RopeCacheExt(b, pos, ts, fs, ms, ff)
		theta := float32(pos)
		for i := 0; i < nRot; i += 2 {
			th := float64(theta/ff[i/2]) * fs
			wc, ws := math.Cos(th)*ms, math.Sin(th)*ms
			if math.Abs(float64(b[i])-wc) > 1e-6 || math.Abs(float64(b[i+1])-ws) > 1e-6 {
				t.Fatalf("pos %d pair %d: (%v,%v), want (%v,%v)", pos, i/2, b[i], b[i+1], wc, ws)
			}
			theta *= ts
		}
	}
}

func TestRopeNeox(t *testing.T) {
	const hd, nRot, heads = 16, 12, 3
	ts := RopeThetaScale(10000, nRot)
	cs := make([]float32, nRot)
	r := rand.New(rand.NewPCG(6, 6))
	for _, pos := range []int{0, 3, 77} {
		RopeCache(cs, pos, ts)
		x := mmRandRow(r, heads*hd)
		orig := append([]float32(nil), x...)
		RopeNeox(x, heads, hd, cs)
		for h := 0; h < heads; h++ {
			o, g := orig[h*hd:(h+1)*hd], x[h*hd:(h+1)*hd]
			for i := 0; i < nRot/2; i++ {
				c, s := float64(cs[2*i]), float64(cs[2*i+1])
				a, b := float64(o[i]), float64(o[i+nRot/2])
				wa, wb := a*c-b*s, a*s+b*c
				if math.Abs(float64(g[i])-wa) > 1e-6 || math.Abs(float64(g[i+nRot/2])-wb) > 1e-6 {
					t.Fatalf("pos %d head %d pair %d", pos, h, i)
				}
			}
			for i := nRot; i < hd; i++ {
				if g[i] != o[i] {
					t.Fatalf("unrotated dim %d changed", i)
				}
			}
		}
		if pos == 0 && !sameF32Bits(x, orig) {
			t.Error("position 0 is not the identity")
		}
	}
}

func TestScaleSoftcap(t *testing.T) {
	x := []float32{-3, -0.5, 0, 0.25, 1, 40}
	y := append([]float32(nil), x...)
	Scale(y, 0.5)
	for i := range x {
		if y[i] != x[i]*0.5 {
			t.Fatal("Scale")
		}
	}
	const c = 2
	Softcap(y, c)
	for i := range x {
		want := c * math.Tanh(float64(x[i])*0.5/c)
		if math.Abs(float64(y[i])-want) > 1e-6 {
			t.Fatalf("Softcap(%v) = %v, want %v", x[i]*0.5, y[i], want)
		}
	}
	if y[len(y)-1] > c {
		t.Error("soft-cap exceeded")
	}
}

func TestGeGLU(t *testing.T) {
	// the fp16 table reproduces GELU(tanh) to fp16 precision
	r := rand.New(rand.NewPCG(7, 7))
	n := 1000
	g, u := make([]float32, n), make([]float32, n)
	for i := range g {
		g[i] = float32(r.Float64()*30 - 15)
		u[i] = float32(r.Float64()*2 - 1)
	}
	g[0], g[1], g[2] = -10, 10, 0
	out := make([]float32, n)
	GeGLU(out, g, u)
	for i := range g {
		x := float64(g[i])
		gelu := 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*x*(1+0.044715*x*x)))
		switch {
		case x <= -10:
			gelu = 0
		case x >= 10:
			gelu = x
		}
		want := gelu * float64(u[i])
		// fp16 rounding of the input (rel 2^-11) and of the output
		if math.Abs(float64(out[i])-want) > 2e-3*math.Abs(x)+1e-6 {
			t.Fatalf("GeGLU(%v, %v) = %v, want %v", g[i], u[i], out[i], want)
		}
	}
	// table entries are exact fp16 values of GELUTanh at fp16 inputs
	tab := geluF16Table()
	for _, h := range []uint16{0x0000, 0x3c00, 0xbc00, 0x4000, 0x3555, 0xc49a} {
		want := FP16ToFP32(FP32ToFP16(GELUTanh(FP16ToFP32(h))))
		if tab[h] != want {
			t.Errorf("table[%#x] = %v, want %v", h, tab[h], want)
		}
	}
	if GELUTanh(0) != 0 || math.Abs(float64(GELUTanh(1))-0.8411919906) > 1e-6 {
		t.Errorf("GELUTanh(1) = %v", GELUTanh(1))
	}
	// aliasing
	a := append([]float32(nil), g...)
	GeGLU(a, a, u)
	if !sameF32Bits(a, out) {
		t.Error("in-place GeGLU differs")
	}
}
