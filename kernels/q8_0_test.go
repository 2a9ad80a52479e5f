package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestQ8_0Reference(t *testing.T) { runReference(t, Q8_0) }

func TestQ8_0Dot(t *testing.T) {
	runDotTests(t, Q8_0, []int{32, 64, 256, 4096, 65536})
}

// specDotQ8_0 follows the comment on dotQ8_0Q8_0 literally, from decoded
// blocks (the fused multiply-add through math/big).
func specDotQ8_0(n int, w, a []byte) float32 {
	var acc float32
	for b := 0; b < n/32; b++ {
		x, y := w[34*b:34*b+34], a[34*b:34*b+34]
		dx := FP16ToFP32(uint16(x[0]) | uint16(x[1])<<8)
		dy := FP16ToFP32(uint16(y[0]) | uint16(y[1])<<8)
		d := float32(dx * dy)
		var s int32
		for e := 0; e < 32; e++ {
			s += int32(int8(x[2+e])) * int32(int8(y[2+e]))
		}
		acc = fma32Exact(d, float32(s), acc)
	}
	return acc
}

func TestQ8_0DotSpecModel(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 0))
	f, _ := FormatOf(Q8_0)
	for _, n := range []int{32, 96, 4096} {
		for name, w := range testRows(r, n) {
			a := gaussRow(r, n, 1)
			wq, aq := quantizeTo(t, Q8_0, w), quantizeTo(t, Q8_0, a)
			if got, want := f.Dot(n, wq, aq), specDotQ8_0(n, wq, aq); math.Float32bits(got) != math.Float32bits(want) {
				t.Errorf("n=%d %s: Dot %v, spec %v", n, name, got, want)
			}
		}
		// Arbitrary bytes (including -128 and odd scales) too.
		wq, aq := make([]byte, n/32*34), make([]byte, n/32*34)
		for i := range wq {
			wq[i], aq[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		for b := 0; b < n/32; b++ { // keep scales finite
			wq[34*b+1] &= 0x3b
			aq[34*b+1] &= 0x3b
		}
		if got, want := f.Dot(n, wq, aq), specDotQ8_0(n, wq, aq); math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("n=%d random bytes: Dot %v, spec %v", n, got, want)
		}
	}
}

func TestQ8_0RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 1))
	for name, x := range testRows(r, 4096) {
		d, st := roundTrip(t, Q8_0, x)
		for b := 0; b < len(x)/32; b++ {
			var amax float64
			for _, v := range x[32*b : 32*b+32] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			// |x - q*fp16(d)| <= d/2 + 127*|d - fp16(d)| <= d*(0.5 + 127*2^-11)
			bound := amax/127*(0.5+127*0x1p-11) + 1e-37
			if amax/127 < 0x1p-14 { // d is subnormal or zero in fp16
				bound = amax + 1e-37
			}
			for i := 32 * b; i < 32*b+32; i++ {
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

func TestQ8_0EdgeBlocks(t *testing.T) {
	// All zeros: d = +0, all quants 0.
	q := quantizeTo(t, Q8_0, make([]float32, 32))
	for i, b := range q {
		if b != 0 {
			t.Fatalf("zero block byte %d = %#x", i, b)
		}
	}
	// Ties round away from zero (roundf), and the max maps to ±127.
	x := make([]float32, 32)
	x[0] = 127
	x[1] = 0.5
	x[2] = -0.5
	x[3] = 1.5
	x[4] = -127
	q = quantizeTo(t, Q8_0, x)
	if FP16ToFP32(uint16(q[0])|uint16(q[1])<<8) != 1 {
		t.Fatalf("d = %#x", q[0:2])
	}
	want := []int8{127, 1, -1, 2, -127}
	for i, w := range want {
		if int8(q[2+i]) != w {
			t.Errorf("q[%d] = %d, want %d", i, int8(q[2+i]), w)
		}
	}
}

func TestQ8_0Activations(t *testing.T) {
	// Same as the reference quantizer except ties (to even) and id = 127/amax.
	x := make([]float32, 32)
	x[0] = 127
	x[1] = 0.5
	x[2] = -0.5
	x[3] = 1.5
	x[4] = 2.5
	q := make([]byte, 34)
	QuantizeQ8_0Activations(q, x)
	want := []int8{127, 0, 0, 2, 2}
	for i, w := range want {
		if int8(q[2+i]) != w {
			t.Errorf("q[%d] = %d, want %d", i, int8(q[2+i]), w)
		}
	}
	r := rand.New(rand.NewPCG(8, 2))
	for name, x := range testRows(r, 1024) {
		ref := quantizeTo(t, Q8_0, x)
		act := make([]byte, len(ref))
		QuantizeQ8_0Activations(act, x)
		for b := 0; b < len(ref)/34; b++ {
			if ref[34*b] != act[34*b] || ref[34*b+1] != act[34*b+1] {
				t.Fatalf("%s: block %d scales differ", name, b)
			}
			for j := 2; j < 34; j++ {
				if d := int(int8(ref[34*b+j])) - int(int8(act[34*b+j])); d < -1 || d > 1 {
					t.Fatalf("%s: block %d quant %d differs by %d", name, b, j-2, d)
				}
			}
		}
	}
}

func BenchmarkDotQ8_0(b *testing.B)      { benchDot(b, Q8_0) }
func BenchmarkQuantizeQ8_0(b *testing.B) { benchQuantize(b, Q8_0) }
