package kernels

import "encoding/binary"

// Q5_0: blocks of 32 weights, 22 bytes each (ggml's block_q5_0):
//
//	[0:2]   d, binary16 little-endian
//	[2:6]   qh, uint32 little-endian: bit j is the 5th bit of weight j
//	[6:22]  qs[16]: low nibble = low 4 bits of weight j, high nibble = of weight j+16
//
// weight j = (q_j - 16) * d with q_j in 0..31.
const (
	qk5_0         = 32
	blockQ5_0Size = 22
)

func init() {
	registerFormat(Format{Type: Q5_0, VecDotType: Q8_0, Quantize: quantizeQ5_0, Dequantize: dequantizeQ5_0, Dot: dotQ5_0Q8_0})
}

// quantizeQ5_0 is llama.cpp's quantize_row_q5_0_ref.
func quantizeQ5_0(dst []byte, src []float32) {
	nb := len(src) / qk5_0
	_ = dst[:nb*blockQ5_0Size]
	for i := 0; i < nb; i++ {
		x := (*[qk5_0]float32)(src[i*qk5_0:])
		y := (*[blockQ5_0Size]byte)(dst[i*blockQ5_0Size:])
		var amax, max float32
		for _, v := range x {
			if av := abs32(v); amax < av {
				amax = av
				max = v
			}
		}
		d := max / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putFP16(y[0:2], d)
		var qh uint32
		for j := 0; j < qk5_0/2; j++ {
			x0 := float32(x[j] * id) // conversions: rounding points, no FMA with +16.5
			x1 := float32(x[j+qk5_0/2] * id)
			// C: MIN(31, (int8_t)(x + 16.5f)), then stored as uint8_t.
			xi0 := uint8(min(31, int32(int8(int32(x0+16.5)))))
			xi1 := uint8(min(31, int32(int8(int32(x1+16.5)))))
			y[6+j] = xi0&0x0f | (xi1&0x0f)<<4
			qh |= uint32(xi0&0x10) >> 4 << j
			qh |= uint32(xi1&0x10) >> 4 << (j + qk5_0/2)
		}
		binary.LittleEndian.PutUint32(y[2:6], qh)
	}
}

// dequantizeQ5_0 is llama.cpp's dequantize_row_q5_0: y = float(q-16) * d
// (exact).
func dequantizeQ5_0(dst []float32, src []byte) {
	nb := len(dst) / qk5_0
	_ = src[:nb*blockQ5_0Size]
	for i := 0; i < nb; i++ {
		x := (*[blockQ5_0Size]byte)(src[i*blockQ5_0Size:])
		y := (*[qk5_0]float32)(dst[i*qk5_0:])
		d := fp16At(x[0:2])
		qh := binary.LittleEndian.Uint32(x[2:6])
		for j := 0; j < qk5_0/2; j++ {
			xh0 := byte(qh>>j<<4) & 0x10
			xh1 := byte(qh>>(j+12)) & 0x10
			x0 := int32(x[6+j]&0x0f|xh0) - 16
			x1 := int32(x[6+j]>>4|xh1) - 16
			y[j] = float32(x0) * d
			y[j+qk5_0/2] = float32(x1) * d
		}
	}
}

// unpackQ5_0 writes the 32 signed weights (q-16, in -16..15) of block x.
func unpackQ5_0(q *[qk5_0]int8, x *[blockQ5_0Size]byte) {
	qh := binary.LittleEndian.Uint32(x[2:6])
	for j := 0; j < qk5_0/2; j++ {
		b := x[6+j]
		q[j] = int8(b&0x0f|byte(qh>>j<<4)&0x10) - 16
		q[j+16] = int8(b>>4|byte(qh>>(j+12))&0x10) - 16
	}
}

// dotQ5_0Q8_0 is the Q5_0·Q8_0 dot product. Accumulation order (the spec the
// AVX2 twin must reproduce; the lane structure of llama.cpp's AVX2
// ggml_vec_dot_q5_0_q8_0 with a separate multiply and add instead of FMA):
//
//	acc[0..7] = +0 (float32)
//	for each block b in order:
//	    d = float32(fp16(x.d) * fp16(y.d))
//	    v[e] = q_e - 16 for e = 0..31 in natural element order (e < 16: low
//	           nibble of qs[e]; e >= 16: high nibble of qs[e-16]; bit 4 = qh bit e)
//	    for l = 0..7:
//	        s[l] = Σ_{e=4l}^{4l+3} int32(v[e]) * int32(y.qs[e])   (exact)
//	        acc[l] = acc[l] + float32(d * float32(s[l]))
//	return hsum8(acc) = ((acc0+acc4) + (acc2+acc6)) + ((acc1+acc5) + (acc3+acc7))
//
// As for Q8_0, the VPSIGNB/VPMADDUBSW trick is exact for every activation
// quant but -128, which no quantizer of this package emits.
func dotQ5_0Q8_0(n int, w, a []byte) float32 {
	if n%qk5_0 != 0 {
		panic("kernels: Q5_0 dot: n is not a multiple of 32")
	}
	nb := n / qk5_0
	_ = w[:nb*blockQ5_0Size]
	_ = a[:nb*blockQ8_0Size]
	var acc [8]float32
	var q [qk5_0]int8
	for i := 0; i < nb; i++ {
		x := (*[blockQ5_0Size]byte)(w[i*blockQ5_0Size:])
		y := (*[blockQ8_0Size]byte)(a[i*blockQ8_0Size:])
		d := float32(fp16At(x[0:2]) * fp16At(y[0:2]))
		unpackQ5_0(&q, x)
		for l := 0; l < 8; l++ {
			e := 4 * l
			s := int32(q[e])*int32(int8(y[2+e])) +
				int32(q[e+1])*int32(int8(y[3+e])) +
				int32(q[e+2])*int32(int8(y[4+e])) +
				int32(q[e+3])*int32(int8(y[5+e]))
			acc[l] += float32(d * float32(s))
		}
	}
	return hsum8(&acc)
}
