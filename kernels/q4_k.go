package kernels

import (
	"encoding/binary"
	"math"
)

// Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32, 144 bytes (ggml's
// block_q4_K):
//
//	[0:2]     d, binary16 LE: super-block scale of the sub-block scales
//	[2:4]     dmin, binary16 LE: super-block scale of the sub-block mins
//	[4:16]    scales[12]: eight 6-bit scales sc_j and eight 6-bit mins m_j
//	          (j < 4:  sc_j = scales[j]&63, m_j = scales[j+4]&63;
//	           j >= 4: sc_j = scales[j+4]&15 | (scales[j-4]>>6)<<4,
//	                   m_j  = scales[j+4]>>4 | (scales[j]>>6)<<4)
//	[16:144]  qs[128]: for chunk c = 0..3, qs[32c+l] holds weight 64c+l in
//	          its low nibble and weight 64c+32+l in its high nibble
//
// weight of sub-block j = d*sc_j * q - dmin*m_j, q in 0..15.
const blockQ4_KSize = 144

func init() {
	registerFormat(Format{Type: Q4_K, VecDotType: Q8_K, Quantize: quantizeQ4_K, Dequantize: dequantizeQ4_K, Dot: dotQ4_KQ8_K})
}

// scaleMinK4 is ggml's get_scale_min_k4.
func scaleMinK4(j int, q *[12]byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xf | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// makeQKX2Quants is ggml's make_qkx2_quants for one sub-block, with every
// float operation in C's order and precision. It returns the scale and the
// (non-negative) min, and leaves the levels in L.
func makeQKX2Quants(n, nmax int, x, weights []float32, L, Laux []uint8, rmin, rdelta float32, nstep int, useMAD bool) (scale, theMin float32) {
	x = x[:n]
	weights = weights[:n]
	L = L[:n]
	Laux = Laux[:n]
	min, max := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < min {
			min = x[i]
		}
		if x[i] > max {
			max = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if min > 0 {
		min = 0
	}
	if max == min {
		for i := range L {
			L[i] = 0
		}
		return 0, -min
	}
	fnmax := float32(nmax)
	iscale := fnmax / (max - min)
	scale = 1 / iscale
	var bestError float32
	for i := range x {
		l := nearestInt(float32(iscale * (x[i] - min)))
		L[i] = uint8(max32i(0, min32i(int32(nmax), l)))
		diff := float32(float32(scale*float32(L[i]))+min) - x[i]
		if useMAD {
			diff = abs32(diff)
		} else {
			diff = float32(diff * diff)
		}
		bestError += float32(weights[i] * diff)
	}
	if nstep < 1 {
		return scale, -min
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + fnmax) / (max - min)
		var sumL, sumL2, sumXL float32
		for i := range x {
			l := nearestInt(float32(iscale * (x[i] - min)))
			l = max32i(0, min32i(int32(nmax), l))
			Laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			wl := float32(w * fl)
			sumL += wl
			sumL2 += float32(wl * fl)
			sumXL += float32(wl * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curError float32
			for i := range x {
				diff := float32(float32(thisScale*float32(Laux[i]))+thisMin) - x[i]
				if useMAD {
					diff = abs32(diff)
				} else {
					diff = float32(diff * diff)
				}
				curError += float32(weights[i] * diff)
			}
			if curError < bestError {
				copy(L, Laux)
				bestError = curError
				scale = thisScale
				min = thisMin
			}
		}
	}
	return scale, -min
}

func min32i(a, b int32) int32 {
	if a < b {
		return a
	}
	return b
}

func max32i(a, b int32) int32 {
	if a > b {
		return a
	}
	return b
}

// quantizeQ4_K is llama.cpp's quantize_row_q4_K_ref (the path llama-quantize
// takes without an importance matrix).
func quantizeQ4_K(dst []byte, src []float32) {
	nb := len(src) / QK_K
	_ = dst[:nb*blockQ4_KSize]
	var (
		L       [QK_K]uint8
		Laux    [32]uint8
		weights [32]float32
		mins    [QK_K / 32]float32
		scales  [QK_K / 32]float32
	)
	for i := 0; i < nb; i++ {
		x := (*[QK_K]float32)(src[i*QK_K:])
		y := (*[blockQ4_KSize]byte)(dst[i*blockQ4_KSize:])
		var maxScale, maxMin float32
		for j := 0; j < QK_K/32; j++ {
			xs := x[32*j : 32*j+32]
			var sumX2 float32
			for _, v := range xs {
				sumX2 += float32(v * v)
			}
			avX := float32(math.Sqrt(float64(sumX2 / 32)))
			for l, v := range xs {
				weights[l] = avX + abs32(v)
			}
			scales[j], mins[j] = makeQKX2Quants(32, 15, xs, weights[:], L[32*j:32*j+32], Laux[:], -1, 0.1, 20, false)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}

		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		sc := (*[12]byte)(y[4:16])
		for j := 0; j < QK_K/32; j++ {
			ls := min(63, uint8(nearestInt(invScale*scales[j])))
			lm := min(63, uint8(nearestInt(invMin*mins[j])))
			if j < 4 {
				sc[j] = ls
				sc[j+4] = lm
			} else {
				sc[j+4] = ls&0xf | (lm&0xf)<<4
				sc[j-4] |= (ls >> 4) << 6
				sc[j] |= (lm >> 4) << 6
			}
		}
		putFP16(y[0:2], maxScale/63)
		putFP16(y[2:4], maxMin/63)

		dAll := fp16At(y[0:2])
		dminAll := fp16At(y[2:4])
		for j := 0; j < QK_K/32; j++ {
			s, m := scaleMinK4(j, sc)
			d := float32(dAll * float32(s))
			if d == 0 {
				continue
			}
			dm := float32(dminAll * float32(m)) // no FMA with the addition below
			for ii := 0; ii < 32; ii++ {
				l := nearestInt((x[32*j+ii] + dm) / d)
				L[32*j+ii] = uint8(max32i(0, min32i(15, l)))
			}
		}

		q := y[16:144]
		for c := 0; c < 4; c++ {
			for l := 0; l < 32; l++ {
				q[32*c+l] = L[64*c+l] | L[64*c+l+32]<<4
			}
		}
	}
}

// dequantizeQ4_K is llama.cpp's dequantize_row_q4_K:
// y = (d*sc)*q - (dmin*m), each product rounded to float32 (both are exact).
func dequantizeQ4_K(dst []float32, src []byte) {
	nb := len(dst) / QK_K
	_ = src[:nb*blockQ4_KSize]
	for i := 0; i < nb; i++ {
		x := (*[blockQ4_KSize]byte)(src[i*blockQ4_KSize:])
		y := (*[QK_K]float32)(dst[i*QK_K:])
		d := fp16At(x[0:2])
		dmin := fp16At(x[2:4])
		sc := (*[12]byte)(x[4:16])
		for c := 0; c < 4; c++ {
			s1, m1 := scaleMinK4(2*c, sc)
			s2, m2 := scaleMinK4(2*c+1, sc)
			d1, mm1 := float32(d*float32(s1)), float32(dmin*float32(m1))
			d2, mm2 := float32(d*float32(s2)), float32(dmin*float32(m2))
			q := (*[32]byte)(x[16+32*c:])
			yy := (*[64]float32)(y[64*c:])
			for l := 0; l < 32; l++ {
				yy[l] = float32(d1*float32(q[l]&0xf)) - mm1
				yy[32+l] = float32(d2*float32(q[l]>>4)) - mm2
			}
		}
	}
}

// dotQ4_KQ8_K is the Q4_K·Q8_K dot product. Accumulation order (the spec
// every assembly kernel reproduces bit for bit, whatever its layout):
//
//	acc = +0, accm = +0 (float32)
//	for each super-block in order:
//	    d    = float32(y.d * fp16(x.d))
//	    dmin = float32(y.d * fp16(x.dmin))
//	    sc_j, m_j (j = 0..7) from get_scale_min_k4; v_e the 4-bit quant of e
//	    sumi = Σ_{j=0}^{7} sc_j * Σ_{e=32j}^{32j+31} v_e * y.qs[e]        (exact int32)
//	    summ = Σ_{j=0}^{7} m_j * (y.bsums[2j] + y.bsums[2j+1])          (exact int32)
//	    acc  = fma32(d, float32(sumi), acc)
//	    accm = fma32(dmin, float32(summ), accm)
//	return acc - accm
//
// One pair of float accumulators per row and one fused multiply-add each
// per super-block: the structure of llama.cpp's repacked q4_K 8x8 kernels,
// which lets an assembly kernel keep eight rows in the eight lanes of a
// register (x8.go). |sumi| < 2^25 and |summ| < 2^22; float32(sumi) may
// round, to nearest even as VCVTDQ2PS does.
func dotQ4_KQ8_K(n int, w, a []byte) float32 {
	if n%QK_K != 0 {
		panic("kernels: Q4_K dot: n is not a multiple of 256")
	}
	nb := n / QK_K
	_ = w[:nb*blockQ4_KSize]
	_ = a[:nb*blockQ8_KSize]
	var acc, accm float32
	for i := 0; i < nb; i++ {
		x := (*[blockQ4_KSize]byte)(w[i*blockQ4_KSize:])
		y := (*[blockQ8_KSize]byte)(a[i*blockQ8_KSize:])
		yd := math.Float32frombits(binary.LittleEndian.Uint32(y[0:4]))
		d := float32(yd * fp16At(x[0:2]))
		dmin := float32(yd * fp16At(x[2:4]))
		sc := (*[12]byte)(x[4:16])
		bs := (*[32]byte)(y[260:292])
		q8 := (*[QK_K]byte)(y[4:260])
		var sumi, summ int32
		for j := 0; j < 8; j++ {
			s, m := scaleMinK4(j, sc)
			b0 := int32(int16(uint16(bs[4*j]) | uint16(bs[4*j+1])<<8))
			b1 := int32(int16(uint16(bs[4*j+2]) | uint16(bs[4*j+3])<<8))
			summ += int32(m) * (b0 + b1)
			// Sub-block j: elements 32j..32j+31 are the low nibbles of
			// qs[32(j/2) ..] for even j, the high nibbles for odd j.
			q4 := (*[32]byte)(x[16+32*(j/2):])
			yj := (*[32]byte)(q8[32*j:])
			shift := 4 * uint(j%2)
			var p int32
			for l := 0; l < 32; l++ {
				p += int32(q4[l]>>shift&0xf) * int32(int8(yj[l]))
			}
			sumi += int32(s) * p
		}
		acc = fma32(d, float32(sumi), acc)
		accm = fma32(dmin, float32(summ), accm)
	}
	return acc - accm
}
