package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

func TestQ4_KReference(t *testing.T) { runReference(t, Q4_K) }

func TestQ4_KDot(t *testing.T) {
	runDotTests(t, Q4_K, []int{256, 512, 4096, 65536})
}

// specDotQ4_K follows the comment on dotQ4_KQ8_K literally (with the
// fused multiply-add computed through math/big).
func specDotQ4_K(n int, w, a []byte) float32 {
	var acc, accm float32
	for b := 0; b < n/256; b++ {
		x, y := w[144*b:144*b+144], a[292*b:292*b+292]
		yd := math.Float32frombits(binary.LittleEndian.Uint32(y[0:]))
		d := float32(yd * FP16ToFP32(binary.LittleEndian.Uint16(x[0:])))
		dmin := float32(yd * FP16ToFP32(binary.LittleEndian.Uint16(x[2:])))
		var sc, m [8]int32
		s12 := x[4:16]
		for j := 0; j < 8; j++ { // get_scale_min_k4, written out again
			if j < 4 {
				sc[j], m[j] = int32(s12[j]&63), int32(s12[j+4]&63)
			} else {
				sc[j] = int32(s12[j+4]&0xf | (s12[j-4]>>6)<<4)
				m[j] = int32(s12[j+4]>>4 | (s12[j]>>6)<<4)
			}
		}
		var bsums [16]int32
		for g := range bsums {
			bsums[g] = int32(int16(binary.LittleEndian.Uint16(y[260+2*g:])))
		}
		var v [256]int32
		for c := 0; c < 4; c++ {
			for l := 0; l < 32; l++ {
				v[64*c+l] = int32(x[16+32*c+l] & 15)
				v[64*c+32+l] = int32(x[16+32*c+l] >> 4)
			}
		}
		var sumi, summ int32
		for j := 0; j < 8; j++ {
			var inner int32
			for e := 32 * j; e < 32*j+32; e++ {
				inner += v[e] * int32(int8(y[4+e]))
			}
			sumi += sc[j] * inner
			summ += m[j] * (bsums[2*j] + bsums[2*j+1])
		}
		acc = fma32Exact(d, float32(sumi), acc)
		accm = fma32Exact(dmin, float32(summ), accm)
	}
	return acc - accm
}

func TestQ4_KDotSpecModel(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 0))
	f, _ := FormatOf(Q4_K)
	for _, n := range []int{256, 768, 4096} {
		for name, w := range testRows(r, n) {
			a := gaussRow(r, n, 1)
			wq, aq := quantizeTo(t, Q4_K, w), quantizeTo(t, Q8_K, a)
			if got, want := f.Dot(n, wq, aq), specDotQ4_K(n, wq, aq); math.Float32bits(got) != math.Float32bits(want) {
				t.Errorf("n=%d %s: Dot %v, spec %v", n, name, got, want)
			}
		}
		// Arbitrary weight bytes with finite scales.
		wq := make([]byte, n/256*144)
		for i := range wq {
			wq[i] = byte(r.Uint32())
		}
		for b := 0; b < n/256; b++ {
			wq[144*b+1] &= 0x3b
			wq[144*b+3] &= 0x3b
		}
		aq := quantizeTo(t, Q8_K, gaussRow(r, n, 1))
		if got, want := f.Dot(n, wq, aq), specDotQ4_K(n, wq, aq); math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("n=%d random bytes: Dot %v, spec %v", n, got, want)
		}
	}
}

func TestQ4_KRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 1))
	for name, x := range testRows(r, 4096) {
		d, st := roundTrip(t, Q4_K, x)
		// Loose per-sub-block bound: the asymmetric 4-bit grid covers the
		// sub-block's [min, max] to within a couple of steps, and the 6-bit
		// quantization of scales and mins against the super-block's largest
		// adds up to a few steps of the super-block's span/63. When the
		// super-block scale is an fp16 subnormal or zero, values flush.
		for sb := 0; sb < len(x)/256; sb++ {
			superSpan := 0.0
			for j := 8 * sb; j < 8*sb+8; j++ {
				superSpan = math.Max(superSpan, q4kSpan(x[32*j:32*j+32]))
			}
			for j := 8 * sb; j < 8*sb+8; j++ {
				span := q4kSpan(x[32*j : 32*j+32])
				bound := 0.35*span + 2*superSpan/63
				if superSpan/15/63 < 0x1p-14 {
					bound = superSpan
				}
				for i := 32 * j; i < 32*j+32; i++ {
					if e := math.Abs(float64(d[i]) - float64(x[i])); e > bound {
						t.Fatalf("%s: element %d: %v -> %v, error %g > %g (sub-block span %g)", name, i, x[i], d[i], e, bound, span)
					}
				}
			}
		}
		if (name == "gauss" || name == "uniform") && st.rmsRel > 0.12 {
			t.Errorf("%s: relative RMS error %g", name, st.rmsRel)
		}
		t.Logf("%s: max abs error %g, relative RMS %g", name, st.maxAbs, st.rmsRel)
	}
}

// q4kSpan is the range the Q4_K grid must cover: [min(x,0), max(x,0)].
func q4kSpan(x []float32) float64 {
	lo, hi := 0.0, 0.0
	for _, v := range x {
		lo = math.Min(lo, float64(v))
		hi = math.Max(hi, float64(v))
	}
	return hi - lo
}

func TestQ4_KEdgeBlocks(t *testing.T) {
	// All zeros: every byte zero.
	q := quantizeTo(t, Q4_K, make([]float32, 256))
	for i, b := range q {
		if b != 0 {
			t.Fatalf("zero block byte %d = %#x", i, b)
		}
	}
	// A constant positive block: min clamps to 0, the levels carry it.
	x := make([]float32, 256)
	for i := range x {
		x[i] = 0.75
	}
	d := dequantizeFrom(t, Q4_K, quantizeTo(t, Q4_K, x), 256)
	for i, v := range d {
		if math.Abs(float64(v)-0.75) > 0.75/15 {
			t.Fatalf("constant block element %d -> %v", i, v)
		}
	}
}

func BenchmarkDotQ4_K(b *testing.B)      { benchDot(b, Q4_K) }
func BenchmarkQuantizeQ4_K(b *testing.B) { benchQuantize(b, Q4_K) }
