package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// q6kBlock accumulates one Q6_K·Q8_K block into acc (kernels.dotQ6_KQ8_K).
func q6kBlock(w, a Mem, m4, acc VecVirtual) {
	// d = yd * fp16(x.d)
	t32 := GP32()
	MOVWLZX(w.Offset(208), t32)
	dx := XMM()
	VMOVD(t32, dx)
	VCVTPH2PS(dx, dx)
	VMULSS(a, dx, dx)
	dv := YMM()
	VBROADCASTSS(dx, dv)

	// Scales: sc holds words sc0,sc2,…,sc14 | sc1,sc3,…,sc15 so that the
	// scale vector of chunk c is a same-in-both-lanes word broadcast.
	xs := XMM()
	VMOVDQU(w.Offset(192), xs)
	VPSHUFB(cQ6KEvenOd, xs, xs)
	sc := YMM()
	VPMOVSXBW(xs, sc)

	// Correction: corr[l] = bsums[2l]*sc_{2l} + bsums[2l+1]*sc_{2l+1}.
	corr := YMM()
	VPMOVSXBW(w.Offset(192), corr)
	VPMADDWD(a.Offset(260), corr, corr)
	VPSLLD(Imm(5), corr, corr)

	sumi := YMM()
	for h := 0; h < 2; h++ {
		ql0, ql1, qh := YMM(), YMM(), YMM()
		VMOVDQU(w.Offset(64*h), ql0)
		VMOVDQU(w.Offset(64*h+32), ql1)
		VMOVDQU(w.Offset(128+32*h), qh)
		for k := 0; k < 4; k++ {
			c := 4*h + k
			u := q6kQuants(k, ql0, ql1, qh, m4)
			t := YMM()
			VPMADDUBSW(a.Offset(4+32*c), u, u)
			VPSHUFB(cQ6KScale.Offset(32*c), sc, t)
			VPMADDWD(t, u, u)
			if c == 0 {
				VPSUBD(corr, u, sumi)
			} else {
				VPADDD(u, sumi, sumi)
			}
		}
	}
	VCVTDQ2PS(sumi, sumi)
	VMULPS(dv, sumi, sumi)
	VADDPS(sumi, acc, acc)
}

var q6kKernel = blockKernel{
	name: "Q6KQ8K", twin: "dotQ6_KQ8_K", wSize: q6kSize, aSize: q8kSize,
	build: func() (func(), func(w, a Mem), func() VecVirtual) {
		m4 := YMM()
		VMOVDQU(cM4, m4)
		acc := YMM()
		return func() { VXORPS(acc, acc, acc) },
			func(w, a Mem) { q6kBlock(w, a, m4, acc) },
			func() VecVirtual { return hsum8(acc) }
	},
}

func genQ6K() {
	genSingle(q6kKernel)
	genRows(q6kKernel)
	genQ6KTokens()
}

// q6kQuants returns the 6-bit quants of chunk k (0..3) of a half whose
// ql/qh vectors are given.
func q6kQuants(k int, ql0, ql1, qh, m4 VecVirtual) VecVirtual {
	u, t := YMM(), YMM()
	switch k {
	case 0: // ql0 & 15 | (qh&3)<<4
		VPAND(m4, ql0, u)
		VPAND(c03, qh, t)
		VPSLLW(Imm(4), t, t)
	case 1: // ql1 & 15 | (qh&0x0c)<<2
		VPAND(m4, ql1, u)
		VPAND(c0C, qh, t)
		VPSLLW(Imm(2), t, t)
	case 2: // ql0>>4 | qh&0x30
		VPSRLW(Imm(4), ql0, u)
		VPAND(m4, u, u)
		VPAND(c30, qh, t)
	case 3: // ql1>>4 | (qh&0xc0)>>2
		VPSRLW(Imm(4), ql1, u)
		VPAND(m4, u, u)
		VPAND(cC0, qh, t)
		VPSRLW(Imm(2), t, t)
	}
	VPOR(t, u, u)
	return u
}

// genQ6KTokens: one Q6_K row against four tokens, sharing the unpacking and
// the scale vectors.
func genQ6KTokens() {
	name := "dotQ6KQ8KTok4AVX2"
	TEXT(name, NOSPLIT, "func(nb int, w *byte, a *byte, aStride int, out *float32, outStride int)")
	Doc(name+" sets out[t*outStride] = dotQ6_KQ8_K(w, token t) for t < 4,",
		"token t's activation at a + t*aStride; nb > 0 blocks.")
	nb := Load(Param("nb"), GP64())
	wp := Load(Param("w"), GP64())
	tp := newTokenPtrs()
	w := Mem{Base: wp}
	m4 := YMM()
	VMOVDQU(cM4, m4)
	const T = 4
	accs := AllocLocal(32 * T)
	z := YMM()
	VXORPS(z, z, z)
	for t := 0; t < T; t++ {
		VMOVUPS(z, accs.Offset(32*t))
	}
	Label(name + "_loop")
	xs := XMM()
	VMOVDQU(w.Offset(192), xs)
	VPSHUFB(cQ6KEvenOd, xs, xs)
	sc := YMM()
	VPMOVSXBW(xs, sc)
	scn := YMM()
	VPMOVSXBW(w.Offset(192), scn)
	sumi := make([]VecVirtual, T)
	for t := 0; t < T; t++ {
		sumi[t] = YMM()
		VPMADDWD(tp.at(t, 260), scn, sumi[t])
		VPSLLD(Imm(5), sumi[t], sumi[t])
	}
	for h := 0; h < 2; h++ {
		ql0, ql1, qh := YMM(), YMM(), YMM()
		VMOVDQU(w.Offset(64*h), ql0)
		VMOVDQU(w.Offset(64*h+32), ql1)
		VMOVDQU(w.Offset(128+32*h), qh)
		for k := 0; k < 4; k++ {
			c := 4*h + k
			u := q6kQuants(k, ql0, ql1, qh, m4)
			s := YMM()
			VPSHUFB(cQ6KScale.Offset(32*c), sc, s)
			for t := 0; t < T; t++ {
				p := YMM()
				VPMADDUBSW(tp.at(t, 4+32*c), u, p)
				VPMADDWD(s, p, p)
				if c == 0 {
					VPSUBD(sumi[t], p, sumi[t])
				} else {
					VPADDD(p, sumi[t], sumi[t])
				}
			}
		}
	}
	dx := XMM()
	t32 := GP32()
	MOVWLZX(w.Offset(208), t32)
	VMOVD(t32, dx)
	VCVTPH2PS(dx, dx)
	for t := 0; t < T; t++ {
		d, ac := XMM(), YMM()
		VMULSS(tp.at(t, 0), dx, d)
		VBROADCASTSS(d, d.AsY())
		VCVTDQ2PS(sumi[t], sumi[t])
		VMULPS(d.AsY(), sumi[t], sumi[t])
		VMOVUPS(accs.Offset(32*t), ac)
		VADDPS(sumi[t], ac, ac)
		VMOVUPS(ac, accs.Offset(32*t))
	}
	ADDQ(U32(q6kSize), wp)
	ADDQ(U32(q8kSize), tp.base)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	res := make([]VecVirtual, T)
	for t := 0; t < T; t++ {
		acc := YMM()
		VMOVUPS(accs.Offset(32*t), acc)
		res[t] = hsum8(acc)
	}
	storeTokens(res)
	VZEROUPPER()
	RET()
}
