package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

func TestQ6_KReference(t *testing.T) { runReference(t, Q6_K) }

func TestQ6_KDot(t *testing.T) {
	runDotTests(t, Q6_K, []int{256, 512, 4096, 65536})
}

// specDotQ6_K follows the comment on dotQ6_KQ8_K literally.
func specDotQ6_K(n int, w, a []byte) float32 {
	var acc float32
	for b := 0; b < n/256; b++ {
		x, y := w[210*b:210*b+210], a[292*b:292*b+292]
		yd := math.Float32frombits(binary.LittleEndian.Uint32(y[0:]))
		d := float32(yd * FP16ToFP32(binary.LittleEndian.Uint16(x[208:])))
		var u [256]int32
		for h := 0; h < 2; h++ {
			for l := 0; l < 32; l++ {
				ql0, ql1, qh := x[64*h+l], x[64*h+l+32], x[128+32*h+l]
				u[128*h+l] = int32(ql0&15 | (qh&3)<<4)
				u[128*h+l+32] = int32(ql1&15 | (qh>>2&3)<<4)
				u[128*h+l+64] = int32(ql0>>4 | (qh>>4&3)<<4)
				u[128*h+l+96] = int32(ql1>>4 | (qh>>6&3)<<4)
			}
		}
		sc := func(g int) int32 { return int32(int8(x[192+g])) }
		bsum := func(g int) int32 { return int32(int16(binary.LittleEndian.Uint16(y[260+2*g:]))) }
		var sumi int32
		for g := 0; g < 16; g++ {
			var inner int32
			for e := 16 * g; e < 16*g+16; e++ {
				inner += u[e] * int32(int8(y[4+e]))
			}
			sumi += sc(g) * (inner - 32*bsum(g))
		}
		acc = fma32Exact(d, float32(sumi), acc)
	}
	return acc
}

func TestQ6_KDotSpecModel(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 0))
	f, _ := FormatOf(Q6_K)
	for _, n := range []int{256, 768, 4096} {
		for name, w := range testRows(r, n) {
			a := gaussRow(r, n, 1)
			wq, aq := quantizeTo(t, Q6_K, w), quantizeTo(t, Q8_K, a)
			if got, want := f.Dot(n, wq, aq), specDotQ6_K(n, wq, aq); math.Float32bits(got) != math.Float32bits(want) {
				t.Errorf("n=%d %s: Dot %v, spec %v", n, name, got, want)
			}
		}
		// Arbitrary weight bytes (scales of any sign, large lane sums that
		// round in the int32 -> float32 conversion).
		wq := make([]byte, n/256*210)
		for i := range wq {
			wq[i] = byte(r.Uint32())
		}
		for b := 0; b < n/256; b++ {
			wq[210*b+209] &= 0x3b
		}
		aq := quantizeTo(t, Q8_K, gaussRow(r, n, 1))
		if got, want := f.Dot(n, wq, aq), specDotQ6_K(n, wq, aq); math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("n=%d random bytes: Dot %v, spec %v", n, got, want)
		}
	}
}

func TestQ6_KRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 1))
	for name, x := range testRows(r, 4096) {
		d, st := roundTrip(t, Q6_K, x)
		// Per sub-block: half a step of the 6-bit grid (amax/32 wide) plus
		// the 8-bit quantization of the sub-block scale against the
		// super-block's largest (32 levels times maxScale/128 ~ amax/128 of
		// the super-block). When the super-block scale is an fp16 subnormal
		// or zero, values flush.
		for sb := 0; sb < len(x)/256; sb++ {
			superAmax := 0.0
			for _, v := range x[256*sb : 256*sb+256] {
				superAmax = math.Max(superAmax, math.Abs(float64(v)))
			}
			for j := 16 * sb; j < 16*sb+16; j++ {
				var amax float64
				for _, v := range x[16*j : 16*j+16] {
					amax = math.Max(amax, math.Abs(float64(v)))
				}
				bound := 0.1*amax + superAmax/100
				if superAmax/32/128 < 0x1p-14 {
					bound = superAmax
				}
				for i := 16 * j; i < 16*j+16; i++ {
					if e := math.Abs(float64(d[i]) - float64(x[i])); e > bound {
						t.Fatalf("%s: element %d: %v -> %v, error %g > %g (sub-block amax %g)", name, i, x[i], d[i], e, bound, amax)
					}
				}
			}
		}
		if (name == "gauss" || name == "uniform") && st.rmsRel > 0.03 {
			t.Errorf("%s: relative RMS error %g", name, st.rmsRel)
		}
		t.Logf("%s: max abs error %g, relative RMS %g", name, st.maxAbs, st.rmsRel)
	}
}

func TestQ6_KEdgeBlocks(t *testing.T) {
	q := quantizeTo(t, Q6_K, make([]float32, 256))
	for i, b := range q {
		if b != 0 {
			t.Fatalf("zero block byte %d = %#x", i, b)
		}
	}
	// Values below GROUP_MAX_EPS also give an all-zero block.
	x := make([]float32, 256)
	for i := range x {
		x[i] = 1e-16
	}
	q = quantizeTo(t, Q6_K, x)
	for i, b := range q {
		if b != 0 {
			t.Fatalf("1e-16 block byte %d = %#x", i, b)
		}
	}
}

func BenchmarkDotQ6_K(b *testing.B)      { benchDot(b, Q6_K) }
func BenchmarkQuantizeQ6_K(b *testing.B) { benchQuantize(b, Q6_K) }
