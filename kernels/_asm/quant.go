package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// absMax returns max |x| over nv vectors of 8 floats at src, in lane 0 of an
// xmm (exact: max does not round; NaN inputs are out of contract).
func absMax(src Mem, nv int) VecVirtual {
	absm := YMM()
	VMOVDQU(cAbsMask, absm)
	const nacc = 4
	var m [nacc]VecVirtual
	for k := 0; k < nv; k++ {
		t := YMM()
		VANDPS(src.Offset(32*k), absm, t)
		if k < nacc {
			m[k] = t
		} else {
			VMAXPS(t, m[k%nacc], m[k%nacc])
		}
	}
	n := min(nv, nacc)
	for k := 1; k < n; k++ {
		VMAXPS(m[k], m[0], m[0])
	}
	hi := XMM()
	VEXTRACTF128(Imm(1), m[0], hi)
	r := XMM()
	VMAXPS(hi, m[0].AsX(), r)
	t := XMM()
	VMOVHLPS(r, r, t)
	VMAXPS(t, r, r)
	VMOVSHDUP(r, t)
	VMAXSS(t, r, r)
	return r
}

// packLowBytes stores the low byte of each int32 lane of v[0..3] (32 values,
// natural order) at dst: VPAND 0xff, two unsigned-saturating packs (which
// then cannot saturate) and VPERMD fix the order. This is Go's int8(x).
func packLowBytes(v [4]VecVirtual, ff, perm VecVirtual, dst Mem) VecVirtual {
	for k := range v {
		VPAND(ff, v[k], v[k])
	}
	VPACKUSDW(v[1], v[0], v[0])
	VPACKUSDW(v[3], v[2], v[2])
	VPACKUSWB(v[2], v[0], v[0])
	VPERMD(v[0], perm, v[0])
	VMOVDQU(v[0], dst)
	return v[0]
}

// packSatBytes stores the int32 lanes of v[0..3] saturated to int8.
func packSatBytes(v [4]VecVirtual, perm VecVirtual, dst Mem) {
	VPACKSSDW(v[1], v[0], v[0])
	VPACKSSDW(v[3], v[2], v[2])
	VPACKSSWB(v[2], v[0], v[0])
	VPERMD(v[0], perm, v[0])
	VMOVDQU(v[0], dst)
}

func f32const(bits uint32) VecVirtual {
	r := GP32()
	MOVL(U32(bits), r)
	x := XMM()
	VMOVD(r, x)
	return x
}

func genQ8KQuant() {
	TEXT("quantizeQ8KAVX2", NOSPLIT, "func(nb int, dst *byte, src *float32)")
	Doc("quantizeQ8KAVX2 is the AVX2 twin of quantizeQ8_K over nb > 0 blocks (finite inputs).")
	nb := Load(Param("nb"), GP64())
	dp := Load(Param("dst"), GP64())
	sp := Load(Param("src"), GP64())
	dst, src := Mem{Base: dp}, Mem{Base: sp}

	Label("q8k_block")
	amax := absMax(src, 32)
	zero := XMM()
	VXORPS(zero, zero, zero)
	VUCOMISS(zero, amax)
	JE(LabelRef("q8k_zero"))

	// max = the first x with |x| == amax.
	A := YMM()
	VBROADCASTSS(amax, A)
	absm := YMM()
	VMOVDQU(cAbsMask, absm)
	idx := GP64()
	XORQ(idx, idx)
	Label("q8k_find")
	{
		t := YMM()
		VANDPS(src.Idx(idx, 4), absm, t)
		VCMPPS(Imm(0), A, t, t) // EQ_OQ
		msk := GP32()
		VMOVMSKPS(t, msk)
		TESTL(msk, msk)
		JNZ(LabelRef("q8k_found"))
		ADDQ(U8(8), idx)
		JMP(LabelRef("q8k_find"))
		Label("q8k_found")
		bit := GP32()
		BSFL(msk, bit)
		ADDQ(bit.As64(), idx)
	}
	mx := XMM()
	VMOVSS(src.Idx(idx, 4), mx)
	is := f32const(0xc2fe0000) // -127
	VDIVSS(mx, is, is)         // iscale = -127/max
	d := f32const(0x3f800000)  // 1
	VDIVSS(is, d, d)           // d = 1/iscale
	VMOVSS(d, dst)
	I := YMM()
	VBROADCASTSS(is, I)

	ff, perm, ones8, ones16 := YMM(), YMM(), YMM(), YMM()
	VMOVDQU(cFF, ff)
	VMOVDQU(cPerm, perm)
	VMOVDQU(cOnes8, ones8)
	VMOVDQU(cOnes16, ones16)
	var H [2]VecVirtual
	for half := 0; half < 2; half++ {
		var t [4]VecVirtual
		for gg := 0; gg < 4; gg++ {
			g := 4*half + gg
			var v [4]VecVirtual
			for k := 0; k < 4; k++ {
				v[k] = YMM()
				VMULPS(src.Offset(32*(4*g+k)), I, v[k])
				VADDPS(cMagic, v[k], v[k])
				VPAND(cLowMant, v[k], v[k])
				VPSUBD(cMant4, v[k], v[k])
				VPMINSD(c127d, v[k], v[k])
			}
			q := packLowBytes(v, ff, perm, dst.Offset(4+32*g))
			// bsums: pair sums, quad sums; lane 0 = group 2g, lane 1 = 2g+1.
			VPMADDUBSW(q, ones8, q)
			VPMADDWD(ones16, q, q)
			t[gg] = q
		}
		VPHADDD(t[1], t[0], t[0])
		VPHADDD(t[3], t[2], t[2])
		VPHADDD(t[2], t[0], t[0])
		H[half] = t[0]
	}
	// H0 lanes: groups 0,2,4,6 | 1,3,5,7; H1: 8,10,12,14 | 9,11,13,15.
	VPACKSSDW(H[1], H[0], H[0])
	hi := XMM()
	VEXTRACTI128(Imm(1), H[0], hi)
	o := XMM()
	VPUNPCKLWD(hi, H[0].AsX(), o)
	VMOVDQU(o, dst.Offset(260))
	VPUNPCKHWD(hi, H[0].AsX(), o)
	VMOVDQU(o, dst.Offset(276))
	JMP(LabelRef("q8k_next"))

	Label("q8k_zero")
	{
		z := YMM()
		VPXOR(z, z, z)
		for off := 0; off+32 <= q8kSize; off += 32 {
			VMOVDQU(z, dst.Offset(off))
		}
		MOVL(U32(0), dst.Offset(288))
	}

	Label("q8k_next")
	ADDQ(U32(q8kSize), dp)
	ADDQ(U32(4*256), sp)
	DECQ(nb)
	JNZ(LabelRef("q8k_block"))
	VZEROUPPER()
	RET()
}

// q8_0Header computes amax of the 32 floats at src and stores
// fp16(amax/127) at dst; it returns amax in lane 0.
func q8_0Header(src, dst Mem) VecVirtual {
	amax := absMax(src, 4)
	d := f32const(0x42fe0000) // 127
	VDIVSS(d, amax, d)        // amax/127
	h := XMM()
	VCVTPS2PH(Imm(0), d, h)
	r := GP32()
	VMOVD(h, r)
	MOVW(r.As16(), dst)
	return amax
}

func genQ8_0Quant() {
	TEXT("quantizeQ8_0AVX2", NOSPLIT, "func(nb int, dst *byte, src *float32)")
	Doc("quantizeQ8_0AVX2 is the AVX2 twin of quantizeQ8_0 (llama.cpp's reference: id = 1/d, round half away from zero) over nb > 0 blocks (finite inputs).")
	{
		nb := Load(Param("nb"), GP64())
		dp := Load(Param("dst"), GP64())
		sp := Load(Param("src"), GP64())
		dst, src := Mem{Base: dp}, Mem{Base: sp}
		ff, perm := YMM(), YMM()
		VMOVDQU(cFF, ff)
		VMOVDQU(cPerm, perm)
		Label("q8_0r_block")
		amax := q8_0Header(src, dst)
		// id = d != 0 ? 1/d : 0, with d = amax/127 recomputed in lane 0.
		d := f32const(0x42fe0000)
		VDIVSS(d, amax, d)
		id := f32const(0x3f800000)
		VDIVSS(d, id, id)
		zero := XMM()
		VXORPS(zero, zero, zero)
		VCMPSS(Imm(4), zero, d, d) // d != 0 (NEQ_UQ)
		VANDPS(d, id, id)
		ID := YMM()
		VBROADCASTSS(id, ID)
		var v [4]VecVirtual
		for k := 0; k < 4; k++ {
			f, fi, m := YMM(), YMM(), YMM()
			v[k] = YMM()
			VMULPS(src.Offset(32*k), ID, f)
			VCVTTPS2DQ(f, v[k])
			VCVTDQ2PS(v[k], fi)
			VSUBPS(fi, f, f)                  // r = f - float(trunc(f))
			VCMPPS(Imm(0x1d), cHalf, f, m)    // r >= 0.5 (GE_OQ)
			VPSUBD(m, v[k], v[k])             // +1
			VCMPPS(Imm(0x12), cNegHalf, f, m) // r <= -0.5 (LE_OQ)
			VPADDD(m, v[k], v[k])             // -1
		}
		packLowBytes(v, ff, perm, dst.Offset(2))
		ADDQ(U32(q8_0Size), dp)
		ADDQ(U32(4*32), sp)
		DECQ(nb)
		JNZ(LabelRef("q8_0r_block"))
		VZEROUPPER()
		RET()
	}

	TEXT("quantizeQ8_0ActAVX2", NOSPLIT, "func(nb int, dst *byte, src *float32)")
	Doc("quantizeQ8_0ActAVX2 is the AVX2 twin of QuantizeQ8_0Activations over nb > 0 blocks (finite inputs).")
	{
		nb := Load(Param("nb"), GP64())
		dp := Load(Param("dst"), GP64())
		sp := Load(Param("src"), GP64())
		dst, src := Mem{Base: dp}, Mem{Base: sp}
		perm, lim := YMM(), YMM()
		VMOVDQU(cPerm, perm)
		VMOVUPS(c127f, lim)
		Label("q8_0a_block")
		amax := q8_0Header(src, dst)
		// id = amax != 0 ? 127/amax : 0
		id := f32const(0x42fe0000)
		VDIVSS(amax, id, id)
		zero := XMM()
		VXORPS(zero, zero, zero)
		VCMPSS(Imm(4), zero, amax, amax)
		VANDPS(amax, id, id)
		ID := YMM()
		VBROADCASTSS(id, ID)
		var v [4]VecVirtual
		for k := 0; k < 4; k++ {
			v[k] = YMM()
			VMULPS(src.Offset(32*k), ID, v[k])
			VMINPS(v[k], lim, v[k]) // 127 < f ? 127 : f (keeps NaN)
			VCVTPS2DQ(v[k], v[k])   // NaN, -inf → 0x80000000 → -128
		}
		packSatBytes(v, perm, dst.Offset(2))
		ADDQ(U32(q8_0Size), dp)
		ADDQ(U32(4*32), sp)
		DECQ(nb)
		JNZ(LabelRef("q8_0a_block"))
		VZEROUPPER()
		RET()
	}
}

func genF16Quant() {
	TEXT("quantizeF16AVX2", NOSPLIT, "func(n8 int, dst *byte, src *float32)")
	Doc("quantizeF16AVX2 converts 8*n8 > 0 floats to binary16 like FP32ToFP16 (VCVTPS2PH, NaN made 0x7e00|sign).")
	n := Load(Param("n8"), GP64())
	dp := Load(Param("dst"), GP64())
	sp := Load(Param("src"), GP64())
	dst, src := Mem{Base: dp}, Mem{Base: sp}
	sign, qnan := YMM(), YMM()
	VMOVUPS(cSign, sign)
	VMOVUPS(cQNaN, qnan)
	Label("f16q_loop")
	x, m, s := YMM(), YMM(), YMM()
	VMOVUPS(src, x)
	VCMPPS(Imm(3), x, x, m) // UNORD_Q
	VANDPS(sign, x, s)
	VORPS(qnan, s, s)
	VBLENDVPS(m, s, x, x)
	h := XMM()
	VCVTPS2PH(Imm(0), x, h)
	VMOVDQU(h, dst)
	ADDQ(U32(16), dp)
	ADDQ(U32(32), sp)
	DECQ(n)
	JNZ(LabelRef("f16q_loop"))
	VZEROUPPER()
	RET()
}

func genQuant() {
	genQ8KQuant()
	genQ8_0Quant()
	genF16Quant()
}
