package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

func TestQ5_0Reference(t *testing.T) { runReference(t, Q5_0) }

func TestQ5_0Dot(t *testing.T) {
	runDotTests(t, Q5_0, []int{32, 64, 256, 4096, 65536})
}

// specDotQ5_0 follows the comment on dotQ5_0Q8_0 literally.
func specDotQ5_0(n int, w, a []byte) float32 {
	var acc [8]float32
	for b := 0; b < n/32; b++ {
		x, y := w[22*b:22*b+22], a[34*b:34*b+34]
		dx := FP16ToFP32(binary.LittleEndian.Uint16(x[0:]))
		dy := FP16ToFP32(binary.LittleEndian.Uint16(y[0:]))
		d := float32(dx * dy)
		qh := binary.LittleEndian.Uint32(x[2:])
		var v [32]int32
		for e := 0; e < 32; e++ {
			var nib byte
			if e < 16 {
				nib = x[6+e] & 15
			} else {
				nib = x[6+e-16] >> 4
			}
			v[e] = int32(nib) | int32(qh>>e&1)<<4 - 16
		}
		for l := 0; l < 8; l++ {
			var s int32
			for e := 4 * l; e < 4*l+4; e++ {
				s += v[e] * int32(int8(y[2+e]))
			}
			acc[l] = acc[l] + float32(d*float32(s))
		}
	}
	return specHsum8(acc)
}

func TestQ5_0DotSpecModel(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 0))
	f, _ := FormatOf(Q5_0)
	for _, n := range []int{32, 96, 4096} {
		for name, w := range testRows(r, n) {
			a := gaussRow(r, n, 1)
			wq, aq := quantizeTo(t, Q5_0, w), quantizeTo(t, Q8_0, a)
			if got, want := f.Dot(n, wq, aq), specDotQ5_0(n, wq, aq); math.Float32bits(got) != math.Float32bits(want) {
				t.Errorf("n=%d %s: Dot %v, spec %v", n, name, got, want)
			}
		}
	}
}

func TestQ5_0RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 1))
	for name, x := range testRows(r, 4096) {
		d, st := roundTrip(t, Q5_0, x)
		for b := 0; b < len(x)/32; b++ {
			var amax float64
			for _, v := range x[32*b : 32*b+32] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			// The max maps to -16 exactly; the other sign can reach +16,
			// clipped to 15: at most one step, plus the fp16 rounding of d.
			bound := amax/16*(1+16*0x1p-11) + 1e-37
			if amax/16 < 0x1p-14 {
				bound = amax + 1e-37
			}
			for i := 32 * b; i < 32*b+32; i++ {
				if e := math.Abs(float64(d[i]) - float64(x[i])); e > bound {
					t.Fatalf("%s: element %d: %v -> %v, error %g > %g", name, i, x[i], d[i], e, bound)
				}
			}
		}
		if name == "gauss" && st.rmsRel > 0.06 {
			t.Errorf("%s: relative RMS error %g", name, st.rmsRel)
		}
	}
}

func TestQ5_0EdgeBlocks(t *testing.T) {
	// All zeros: d = 0/-16 = -0 (fp16 0x8000, as llama.cpp writes it), every
	// level 16 (0 + 16.5 truncated): nibbles 0, all high bits set.
	q := quantizeTo(t, Q5_0, make([]float32, 32))
	want := make([]byte, 22)
	want[1] = 0x80
	want[2], want[3], want[4], want[5] = 0xff, 0xff, 0xff, 0xff
	if string(q) != string(want) {
		t.Fatalf("zero block = %x, want %x", q, want)
	}
	d := dequantizeFrom(t, Q5_0, q, 32)
	for _, v := range d {
		if v != 0 {
			t.Fatalf("zero block dequantizes to %v", v)
		}
	}
}

func BenchmarkDotQ5_0(b *testing.B)      { benchDot(b, Q5_0) }
func BenchmarkQuantizeQ5_0(b *testing.B) { benchQuantize(b, Q5_0) }
