package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// Q8_K is never stored in model files, so there is no llama.cpp reference
// tensor; the quantizer is checked against its definition.
func TestQ8_KQuantizer(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 0))
	for name, x := range testRows(r, 1024) {
		q := quantizeTo(t, Q8_K, x)
		for b := 0; b < len(x)/256; b++ {
			blk := q[292*b : 292*b+292]
			xs := x[256*b : 256*b+256]
			var amax, max float32
			for _, v := range xs {
				if float32(math.Abs(float64(v))) > amax {
					amax, max = float32(math.Abs(float64(v))), v
				}
			}
			d := math.Float32frombits(binary.LittleEndian.Uint32(blk))
			if amax == 0 {
				for i, c := range blk {
					if c != 0 {
						t.Fatalf("%s: zero block byte %d = %#x", name, i, c)
					}
				}
				continue
			}
			iscale := -127 / max
			if d != 1/iscale {
				t.Fatalf("%s: block %d: d = %v, want %v", name, b, d, 1/iscale)
			}
			for j, v := range xs {
				want := math.RoundToEven(float64(iscale * v))
				want = math.Min(127, want)
				if got := float64(int8(blk[4+j])); got != want {
					t.Fatalf("%s: block %d element %d: q = %v, want %v", name, b, j, got, want)
				}
			}
			for g := 0; g < 16; g++ {
				var s int
				for _, c := range blk[4+16*g : 4+16*g+16] {
					s += int(int8(c))
				}
				if got := int(int16(binary.LittleEndian.Uint16(blk[260+2*g:]))); got != s {
					t.Fatalf("%s: bsums[%d] = %d, want %d", name, g, got, s)
				}
			}
		}
	}
}

func TestQ8_KRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 1))
	for name, x := range testRows(r, 4096) {
		d, st := roundTrip(t, Q8_K, x)
		for b := 0; b < len(x)/256; b++ {
			var amax float64
			for _, v := range x[256*b : 256*b+256] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			bound := amax/127*0.5*(1+1e-5) + amax*0x1p-23
			for i := 256 * b; i < 256*b+256; i++ {
				if e := math.Abs(float64(d[i]) - float64(x[i])); e > bound {
					t.Fatalf("%s: element %d: %v -> %v, error %g > %g", name, i, x[i], d[i], e, bound)
				}
			}
		}
		if name == "gauss" && st.rmsRel > 0.01 {
			t.Errorf("%s: relative RMS error %g", name, st.rmsRel)
		}
	}
}

func BenchmarkQuantizeQ8_K(b *testing.B) { benchQuantize(b, Q8_K) }
