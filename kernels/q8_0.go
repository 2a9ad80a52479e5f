package kernels

import "math"

// Q8_0: blocks of 32 weights, 34 bytes each (ggml's block_q8_0):
//
//	[0:2]   d, binary16 little-endian
//	[2:34]  qs[32], int8; weight j = qs[j] * d
const (
	qk8_0         = 32
	blockQ8_0Size = 34
)

func init() {
	registerFormat(Format{Type: Q8_0, VecDotType: Q8_0, Quantize: quantizeQ8_0, Dequantize: dequantizeQ8_0, Dot: dotQ8_0Q8_0})
}

// roundHalfAway is C's roundf for |f| < 2^23 (the fractional part f - trunc(f)
// is exact there).
func roundHalfAway(f float32) int32 {
	f = float32(f) // rounding point: keep a caller's product out of an FMA
	i := int32(f)
	r := f - float32(i)
	if r >= 0.5 {
		i++
	} else if r <= -0.5 {
		i--
	}
	return i
}

// quantizeQ8_0 is llama.cpp's quantize_row_q8_0_ref.
func quantizeQ8_0(dst []byte, src []float32) {
	nb := len(src) / qk8_0
	_ = dst[:nb*blockQ8_0Size]
	for i := 0; i < nb; i++ {
		x := (*[qk8_0]float32)(src[i*qk8_0:])
		y := (*[blockQ8_0Size]byte)(dst[i*blockQ8_0Size:])
		var amax float32
		for _, v := range x {
			if av := abs32(v); !(amax > av) { // C: amax = MAX(amax, av) = amax > av ? amax : av
				amax = av
			}
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putFP16(y[0:2], d)
		for j, v := range x {
			y[2+j] = byte(int8(roundHalfAway(v * id)))
		}
	}
}

// QuantizeQ8_0Activations quantizes src to Q8_0 the way llama.cpp's x86 AVX2
// quantize_row_q8_0 does (the conversion llama.cpp applies to activations on
// this machine kind, not the reference quantizer used for weight files):
// amax as above, d = amax/127 stored as binary16, id = 127/amax (0 when amax
// is 0), q = round-half-even(x*id) saturated to int8. It differs from the
// registered reference quantizer only in ties and in the reciprocal's last
// bit. len(src) must be a multiple of 32 and dst hold len(src)/32*34 bytes.
func QuantizeQ8_0Activations(dst []byte, src []float32) {
	nb := len(src) / qk8_0
	_ = dst[:nb*blockQ8_0Size]
	for i := 0; i < nb; i++ {
		x := (*[qk8_0]float32)(src[i*qk8_0:])
		y := (*[blockQ8_0Size]byte)(dst[i*blockQ8_0Size:])
		var amax float32
		for _, v := range x {
			if av := abs32(v); av > amax {
				amax = av
			}
		}
		putFP16(y[0:2], amax/127)
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		for j, v := range x {
			f := float32(v * id)
			var q int32
			switch {
			case f != f:
				q = math.MinInt8 // cvtps_epi32 of NaN is 0x80000000, saturated
			case f >= 127:
				q = 127
			case f <= -128:
				q = -128
			default:
				q = nearestInt(f)
			}
			y[2+j] = byte(int8(q))
		}
	}
}

// dequantizeQ8_0 is llama.cpp's dequantize_row_q8_0: y = float(q) * d (exact).
func dequantizeQ8_0(dst []float32, src []byte) {
	nb := len(dst) / qk8_0
	_ = src[:nb*blockQ8_0Size]
	for i := 0; i < nb; i++ {
		x := (*[blockQ8_0Size]byte)(src[i*blockQ8_0Size:])
		y := (*[qk8_0]float32)(dst[i*qk8_0:])
		d := fp16At(x[0:2])
		for j := range y {
			y[j] = float32(int8(x[2+j])) * d
		}
	}
}

// dotQ8_0Q8_0 is the Q8_0·Q8_0 dot product. Accumulation order (the spec
// every assembly kernel reproduces bit for bit, whatever its layout):
//
//	acc = +0 (float32)
//	for each block b in order:
//	    d = float32(fp16(x.d) * fp16(y.d))
//	    s = Σ_{e=0}^{31} int32(x.qs[e]) * int32(y.qs[e])   (exact; |s| < 2^24)
//	    acc = fma32(d, float32(s), acc)                    (one rounding)
//	return acc
//
// One float accumulator per row, one fused multiply-add per block: the
// structure of llama.cpp's repacked (q8_0 4x8/8x8) kernels, which lets an
// assembly kernel keep eight rows in the eight lanes of one register (see
// x8.go). The assembly kernels compute s with the VPSIGNB trick (|x|
// times y signed by x); that is exact except when an activation quant is
// -128 against a negative weight (VPSIGNB cannot negate -128); no
// quantizer of this package emits -128 (their range is ±127), so the twins
// may use it.
func dotQ8_0Q8_0(n int, w, a []byte) float32 {
	if n%qk8_0 != 0 {
		panic("kernels: Q8_0 dot: n is not a multiple of 32")
	}
	nb := n / qk8_0
	_ = w[:nb*blockQ8_0Size]
	_ = a[:nb*blockQ8_0Size]
	var acc float32
	for i := 0; i < nb; i++ {
		x := (*[blockQ8_0Size]byte)(w[i*blockQ8_0Size:])
		y := (*[blockQ8_0Size]byte)(a[i*blockQ8_0Size:])
		d := float32(fp16At(x[0:2]) * fp16At(y[0:2]))
		var s int32
		for e := 2; e < blockQ8_0Size; e++ {
			s += int32(int8(x[e])) * int32(int8(y[e]))
		}
		acc = fma32(d, float32(s), acc)
	}
	return acc
}
