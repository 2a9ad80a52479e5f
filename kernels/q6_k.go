package kernels

import (
	"encoding/binary"
	"math"
)

// Q6_K: super-blocks of 256 weights in 16 sub-blocks of 16, 210 bytes (ggml's
// block_q6_K):
//
//	[0:128]    ql: low 4 bits of the quants
//	[128:192]  qh: high 2 bits of the quants
//	[192:208]  scales[16], int8: one per 16 weights
//	[208:210]  d, binary16 LE
//
// For half h = 0,1 (elements 128h..128h+127, ql+64h, qh+32h) and l = 0..31:
//
//	q[128h+l]    = ql[l]    & 15 | (qh[l]>>0 & 3)<<4
//	q[128h+l+32] = ql[l+32] & 15 | (qh[l]>>2 & 3)<<4
//	q[128h+l+64] = ql[l]    >> 4 | (qh[l]>>4 & 3)<<4
//	q[128h+l+96] = ql[l+32] >> 4 | (qh[l]>>6 & 3)<<4
//
// weight e = d * scales[e/16] * (q[e] - 32).
const blockQ6_KSize = 210

func init() {
	registerFormat(Format{Type: Q6_K, VecDotType: Q8_K, Quantize: quantizeQ6_K, Dequantize: dequantizeQ6_K, Dot: dotQ6_KQ8_K})
}

// groupMaxEps is ggml's GROUP_MAX_EPS.
const groupMaxEps = 1e-15

// makeQXQuants is ggml's make_qx_quants with qw == NULL, for rmse_type 1
// (weights x²), the only variant Q6_K's reference quantizer uses. Levels are
// stored biased by nmax in L. Every float operation follows C's order.
func makeQXQuants(n, nmax int, x []float32, L []int8) float32 {
	x = x[:n]
	L = L[:n]
	var max, amax float32
	for _, v := range x {
		if av := abs32(v); av > amax {
			amax = av
			max = v
		}
	}
	if amax < groupMaxEps {
		for i := range L {
			L[i] = 0
		}
		return 0
	}
	fnmax := float32(nmax)
	lo, hi := int32(-nmax), int32(nmax-1)
	iscale := float32(-nmax) / max
	var sumlx, suml2 float32
	for i, v := range x {
		l := nearestInt(float32(iscale * v))
		l = max32i(lo, min32i(hi, l))
		L[i] = int8(l + int32(nmax))
		w := float32(v * v)
		fl := float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := float32(scale * sumlx)
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fnmax + float32(0.1*float32(is))) / max
		sumlx, suml2 = 0, 0
		for _, v := range x {
			l := nearestInt(float32(iscale * v))
			l = max32i(lo, min32i(hi, l))
			w := float32(v * v)
			fl := float32(l)
			sumlx += float32(float32(w*v) * fl)
			suml2 += float32(float32(w*fl) * fl)
		}
		if suml2 > 0 && float32(sumlx*sumlx) > float32(best*suml2) {
			for i, v := range x {
				l := nearestInt(float32(iscale * v))
				L[i] = int8(int32(nmax) + max32i(lo, min32i(hi, l)))
			}
			scale = sumlx / suml2
			best = float32(scale * sumlx)
		}
	}
	return scale
}

// quantizeQ6_K is llama.cpp's quantize_row_q6_K_ref (the path llama-quantize
// takes without an importance matrix).
func quantizeQ6_K(dst []byte, src []float32) {
	nb := len(src) / QK_K
	_ = dst[:nb*blockQ6_KSize]
	var (
		L      [QK_K]int8
		scales [QK_K / 16]float32
	)
	for i := 0; i < nb; i++ {
		x := (*[QK_K]float32)(src[i*QK_K:])
		y := (*[blockQ6_KSize]byte)(dst[i*blockQ6_KSize:])
		var maxScale, maxAbsScale float32
		for ib := 0; ib < QK_K/16; ib++ {
			scale := makeQXQuants(16, 32, x[16*ib:16*ib+16], L[16*ib:16*ib+16])
			scales[ib] = scale
			if as := abs32(scale); as > maxAbsScale {
				maxAbsScale = as
				maxScale = scale
			}
		}
		if maxAbsScale < groupMaxEps {
			clear(y[:])
			continue
		}
		iscale := -128 / maxScale
		putFP16(y[208:210], 1/iscale)
		for ib := 0; ib < QK_K/16; ib++ {
			y[192+ib] = byte(int8(min32i(127, nearestInt(iscale*scales[ib]))))
		}
		dAll := fp16At(y[208:210])
		for j := 0; j < QK_K/16; j++ {
			d := dAll * float32(int8(y[192+j]))
			if d == 0 {
				continue
			}
			for ii := 0; ii < 16; ii++ {
				l := nearestInt(x[16*j+ii] / d)
				L[16*j+ii] = int8(max32i(-32, min32i(31, l)) + 32)
			}
		}
		for h := 0; h < 2; h++ {
			ql := y[64*h : 64*h+64]
			qh := y[128+32*h : 128+32*h+32]
			Lh := L[128*h : 128*h+128]
			for l := 0; l < 32; l++ {
				q1 := uint8(Lh[l]) & 0xf
				q2 := uint8(Lh[l+32]) & 0xf
				q3 := uint8(Lh[l+64]) & 0xf
				q4 := uint8(Lh[l+96]) & 0xf
				ql[l] = q1 | q3<<4
				ql[l+32] = q2 | q4<<4
				qh[l] = uint8(Lh[l])>>4 | (uint8(Lh[l+32])>>4)<<2 | (uint8(Lh[l+64])>>4)<<4 | (uint8(Lh[l+96])>>4)<<6
			}
		}
	}
}

// unpackQ6_K writes the 256 unsigned 6-bit quants (0..63) of block x.
func unpackQ6_K(q *[QK_K]uint8, x *[blockQ6_KSize]byte) {
	for h := 0; h < 2; h++ {
		ql := (*[64]byte)(x[64*h:])
		qh := (*[32]byte)(x[128+32*h:])
		qq := (*[128]uint8)(q[128*h:])
		for l := 0; l < 32; l++ {
			b := qh[l]
			qq[l] = ql[l]&0xf | (b&3)<<4
			qq[l+32] = ql[l+32]&0xf | (b>>2&3)<<4
			qq[l+64] = ql[l]>>4 | (b>>4&3)<<4
			qq[l+96] = ql[l+32]>>4 | (b>>6&3)<<4
		}
	}
}

// dequantizeQ6_K is llama.cpp's dequantize_row_q6_K:
// y = float32(d * float(sc)) * float(q - 32), in that order.
func dequantizeQ6_K(dst []float32, src []byte) {
	nb := len(dst) / QK_K
	_ = src[:nb*blockQ6_KSize]
	var q [QK_K]uint8
	for i := 0; i < nb; i++ {
		x := (*[blockQ6_KSize]byte)(src[i*blockQ6_KSize:])
		y := (*[QK_K]float32)(dst[i*QK_K:])
		d := fp16At(x[208:210])
		unpackQ6_K(&q, x)
		for j := 0; j < QK_K/16; j++ {
			ds := d * float32(int8(x[192+j]))
			for e := 16 * j; e < 16*j+16; e++ {
				y[e] = ds * float32(int32(q[e])-32)
			}
		}
	}
}

// dotQ6_KQ8_K is the Q6_K·Q8_K dot product. Accumulation order (the spec
// every assembly kernel reproduces bit for bit, whatever its layout):
//
//	acc = +0 (float32)
//	for each super-block in order:
//	    d = float32(y.d * fp16(x.d))
//	    u_e = unsigned 6-bit quant of element e (0..63, see the layout above)
//	    sc_g = int8 scale of sub-block g (elements 16g..16g+15)
//	    sumi = Σ_{g=0}^{15} sc_g * (Σ_{e=16g}^{16g+15} u_e * y.qs[e] - 32 * y.bsums[g])   (exact int32)
//	    acc = fma32(d, float32(sumi), acc)
//	return acc
//
// The -32 offset of the quants goes through the activation's sums per 16
// elements (bsums), as in llama.cpp: for a Q8_K block made by quantizeQ8_K
// it equals Σ (u_e - 32) * y.qs[e]. One float accumulator per row and one
// fused multiply-add per super-block (the structure of llama.cpp's
// repacked kernels; see x8.go). |sumi| < 2^27; float32(sumi) may round, to
// nearest even as VCVTDQ2PS does.
func dotQ6_KQ8_K(n int, w, a []byte) float32 {
	if n%QK_K != 0 {
		panic("kernels: Q6_K dot: n is not a multiple of 256")
	}
	nb := n / QK_K
	_ = w[:nb*blockQ6_KSize]
	_ = a[:nb*blockQ8_KSize]
	var acc float32
	var u [QK_K]uint8
	for i := 0; i < nb; i++ {
		x := (*[blockQ6_KSize]byte)(w[i*blockQ6_KSize:])
		y := (*[blockQ8_KSize]byte)(a[i*blockQ8_KSize:])
		d := float32(math.Float32frombits(binary.LittleEndian.Uint32(y[0:4])) * fp16At(x[208:210]))
		unpackQ6_K(&u, x)
		q8 := (*[QK_K]byte)(y[4:260])
		bs := (*[32]byte)(y[260:292])
		var sumi int32
		for g := 0; g < 16; g++ {
			var p int32
			for e := 16 * g; e < 16*g+16; e++ {
				p += int32(u[e]) * int32(int8(q8[e]))
			}
			p -= 32 * int32(int16(uint16(bs[2*g])|uint16(bs[2*g+1])<<8))
			sumi += int32(int8(x[192+g])) * p
		}
		acc = fma32(d, float32(sumi), acc)
	}
	return acc
}
