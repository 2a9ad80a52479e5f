package kernels

import (
	"encoding/binary"
	"math"
)

// Q8_K: the activation type of the K-quants. Blocks of 256 values, 292 bytes
// (ggml's block_q8_K):
//
//	[0:4]      d, float32 little-endian
//	[4:260]    qs[256], int8; value j = d * qs[j]
//	[260:292]  bsums[16], int16 little-endian: bsums[g] = Σ qs[16g .. 16g+15]
const blockQ8_KSize = 292

func init() {
	// Q8_K has no dot product of its own: it is only ever the right-hand
	// operand of the Q4_K and Q6_K dots (as in ggml, whose Q8_K has no
	// vec_dot).
	registerFormat(Format{Type: Q8_K, VecDotType: Q8_K, Quantize: quantizeQ8_K, Dequantize: dequantizeQ8_K})
}

// quantizeQ8_K is llama.cpp's quantize_row_q8_K_ref, which is also what the
// x86 build uses to quantize activations.
func quantizeQ8_K(dst []byte, src []float32) {
	nb := len(src) / QK_K
	_ = dst[:nb*blockQ8_KSize]
	for i := 0; i < nb; i++ {
		x := (*[QK_K]float32)(src[i*QK_K:])
		y := (*[blockQ8_KSize]byte)(dst[i*blockQ8_KSize:])
		var max, amax float32
		for _, v := range x {
			if av := abs32(v); av > amax {
				amax = av
				max = v
			}
		}
		if amax == 0 {
			// llama.cpp zeroes d and qs and leaves bsums unwritten; we
			// write zeros, their only consistent value.
			clear(y[:])
			continue
		}
		iscale := -127 / max
		for j, v := range x {
			y[4+j] = byte(int8(min(127, nearestInt(iscale*v))))
		}
		for g := 0; g < QK_K/16; g++ {
			var sum int32
			for _, q := range y[4+16*g : 4+16*g+16] {
				sum += int32(int8(q))
			}
			binary.LittleEndian.PutUint16(y[260+2*g:], uint16(int16(sum)))
		}
		binary.LittleEndian.PutUint32(y[0:4], math.Float32bits(1/iscale))
	}
}

// dequantizeQ8_K is llama.cpp's dequantize_row_q8_K: y = d * float(q).
func dequantizeQ8_K(dst []float32, src []byte) {
	nb := len(dst) / QK_K
	_ = src[:nb*blockQ8_KSize]
	for i := 0; i < nb; i++ {
		x := (*[blockQ8_KSize]byte)(src[i*blockQ8_KSize:])
		y := (*[QK_K]float32)(dst[i*QK_K:])
		d := math.Float32frombits(binary.LittleEndian.Uint32(x[0:4]))
		for j := range y {
			y[j] = d * float32(int8(x[4+j]))
		}
	}
}
