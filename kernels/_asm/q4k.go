package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// hsum8 reduces the 8 lanes of acc in kernels.hsum8's order,
// ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)), into lane 0 of the result.
func hsum8(acc VecVirtual) VecVirtual {
	hi := XMM()
	VEXTRACTF128(Imm(1), acc, hi)
	r := XMM()
	VADDPS(hi, acc.AsX(), r)
	return hsum4(r)
}

// hsum4 reduces r in the order (r0+r2) + (r1+r3) into lane 0 of r.
func hsum4(r VecVirtual) VecVirtual {
	t := XMM()
	VMOVHLPS(r, r, t)
	VADDPS(t, r, r)
	VMOVSHDUP(r, t)
	VADDSS(t, r, r)
	return r
}

// hsumOdd reduces the odd lanes of acc as (a1+a5) + (a3+a7) into lane 0.
func hsumOdd(acc VecVirtual) VecVirtual {
	hi := XMM()
	VEXTRACTF128(Imm(1), acc, hi)
	r := XMM()
	VADDPS(hi, acc.AsX(), r)
	t := XMM()
	VMOVHLPS(r, r, t)
	VADDPS(t, r, r)
	VMOVSHDUP(r, r)
	return r
}

// Block sizes.
const (
	q4kSize = 144
	q8kSize = 292
	q6kSize = 210
)

// q4kConsts holds the loop-invariant registers of the Q4_K kernels.
type q4kConsts struct {
	m4, minsShuf  VecVirtual
	k3f, k0f, k03 GPVirtual
}

func newQ4KConsts() *q4kConsts {
	c := &q4kConsts{m4: YMM(), minsShuf: YMM(), k3f: GP64(), k0f: GP64(), k03: GP64()}
	VMOVDQU(cM4, c.m4)
	VMOVDQU(cQ4KMins, c.minsShuf)
	MOVQ(U64(0x3f3f3f3f3f3f3f3f), c.k3f)
	MOVQ(U64(0x0f0f0f0f0f0f0f0f), c.k0f)
	MOVQ(U64(0x0303030303030303), c.k03)
	return c
}

// q4kScales decodes the 12 packed 6-bit scales/mins of the block at w into a
// ymm whose two 128-bit lanes both hold bytes sc0..3 m0..3 sc4..7 m4..7
// (ggml's utmp trick, in general-purpose registers: they are idle while the
// vector units are not). A round trip through the stack instead of VMOVQ
// was measured 2× slower (failed store-to-load forwarding).
func q4kScales(c *q4kConsts, w Mem) VecVirtual {
	A, B, L, H, T := GP64(), GP64(), GP64(), GP64(), GP64()
	MOVQ(w.Offset(4), A)         // scale bytes q0..q7
	MOVL(w.Offset(12), B.As32()) // q8..q11
	// L = A & 0x3f.. : sc0..3 | m0..3
	MOVQ(A, L)
	ANDQ(c.k3f, L)
	// H = ((A>>6) & 0x03..) << 4 | ((B | (B>>4)<<32) & 0x0f..) : sc4..7 | m4..7
	MOVQ(A, T)
	SHRQ(U8(6), T)
	ANDQ(c.k03, T)
	SHLQ(U8(4), T)
	MOVQ(B, H)
	SHRQ(U8(4), H)
	SHLQ(U8(32), H)
	ORQ(B, H)
	ANDQ(c.k0f, H)
	ORQ(T, H)
	v := YMM()
	x1, x2 := XMM(), XMM()
	VMOVQ(L, x1)
	VMOVQ(H, x2)
	VPUNPCKLQDQ(x2, x1, x1)
	VINSERTI128(Imm(1), x1, x1.AsY(), v)
	return v
}

// q4kScaleVec returns the word-broadcast of sub-block scale j. (Storing
// the expanded scales to the stack and using VPBROADCASTD loads instead of
// VPSHUFB was measured 18% slower.)
func q4kScaleVec(sc VecVirtual, j int) VecVirtual {
	s := YMM()
	VPSHUFB(cQ4KScale.Offset(32*j), sc, s)
	return s
}

// q4kScaleD returns P = [d, dmin, d, dmin, …] (d = yd*fp16(x.d), dmin =
// yd*fp16(x.dmin)) and D = [d, …, d].
func q4kScaleD(w, a Mem) (P, D VecVirtual) {
	P, D = YMM(), YMM()
	VPBROADCASTD(w, P)
	VCVTPH2PS(P.AsX(), P)
	VBROADCASTSS(a, D)
	VMULPS(D, P, P)
	VMOVSLDUP(P, D)
	return P, D
}

// q4kMins subtracts the block's min terms from accm: odd lane 2k+1 gets
// float32(dmin*float32(p[k])), p[k] = m_{2k}(b4k+b4k+1) + m_{2k+1}(b4k+2+b4k+3)
// in exact int32 (VPMADDWD, then adjacent dword sums); even lanes collect
// junk that is never read.
func q4kMins(c *q4kConsts, sc VecVirtual, a Mem, P, accm VecVirtual) {
	mn, t := YMM(), YMM()
	VPSHUFB(c.minsShuf, sc, mn)
	VPMADDWD(a.Offset(260), mn, mn)
	VPSLLQ(Imm(32), mn, t)
	VPADDD(t, mn, mn)
	VCVTDQ2PS(mn, mn)
	VMULPS(P, mn, mn)
	VSUBPS(mn, accm, accm)
}

var q4kKernel = blockKernel{
	name: "Q4KQ8K", twin: "dotQ4_KQ8_K", wSize: q4kSize, aSize: q8kSize,
	build: func() (func(), func(w, a Mem), func() VecVirtual) {
		c := newQ4KConsts()
		acc, accm := YMM(), YMM()
		start := func() {
			VXORPS(acc, acc, acc)
			VXORPS(accm, accm, accm)
		}
		block := func(w, a Mem) {
			sc := q4kScales(c, w)
			P, D := q4kScaleD(w, a)
			q4kMins(c, sc, a, P, accm)
			// s[l] = Σ_j sc_j Σ_{e in lane l of sub-block j} q*y.
			sumi := YMM()
			for k := 0; k < 4; k++ {
				lo, hi := YMM(), YMM()
				VMOVDQU(w.Offset(16+32*k), lo)
				VPSRLW(Imm(4), lo, hi)
				VPAND(c.m4, lo, lo)
				VPAND(c.m4, hi, hi)
				VPMADDUBSW(a.Offset(4+64*k), lo, lo)
				VPMADDUBSW(a.Offset(4+64*k+32), hi, hi)
				VPMADDWD(q4kScaleVec(sc, 2*k), lo, lo)
				VPMADDWD(q4kScaleVec(sc, 2*k+1), hi, hi)
				if k == 0 {
					VPADDD(lo, hi, sumi)
				} else {
					VPADDD(lo, sumi, sumi)
					VPADDD(hi, sumi, sumi)
				}
			}
			VCVTDQ2PS(sumi, sumi)
			VMULPS(D, sumi, sumi)
			VADDPS(sumi, acc, acc)
		}
		finish := func() VecVirtual {
			s := hsum8(acc)
			m := hsumOdd(accm)
			VADDSS(m, s, s)
			return s
		}
		return start, block, finish
	},
}

func genQ4K() {
	genSingle(q4kKernel)
	genRows(q4kKernel)
	genQ4KTokens()
}

// genQ4KTokens: one Q4_K row against four tokens. The weight unpacking and
// the scale vectors are shared; each token's arithmetic is exactly that of
// the single-row kernel.
func genQ4KTokens() {
	name := "dotQ4KQ8KTok4AVX2"
	TEXT(name, NOSPLIT, "func(nb int, w *byte, a *byte, aStride int, out *float32, outStride int)")
	Doc(name+" sets out[t*outStride] = dotQ4_KQ8_K(w, token t) for t < 4,",
		"token t's activation at a + t*aStride; nb > 0 blocks.")
	nb := Load(Param("nb"), GP64())
	wp := Load(Param("w"), GP64())
	tp := newTokenPtrs()
	w := Mem{Base: wp}
	c := newQ4KConsts()
	const T = 4
	accs := AllocLocal(2 * 32 * T) // acc_t at 64t, accm_t at 64t+32
	z := YMM()
	VXORPS(z, z, z)
	for t := 0; t < T; t++ {
		VMOVUPS(z, accs.Offset(64*t))
		VMOVUPS(z, accs.Offset(64*t+32))
	}
	Label(name + "_loop")
	sc := q4kScales(c, w)
	// xP = [fp16(x.d), fp16(x.dmin), …]; token t's P = xP*yd_t.
	xP := YMM()
	VPBROADCASTD(w, xP)
	VCVTPH2PS(xP.AsX(), xP)
	mnx := YMM()
	VPSHUFB(c.minsShuf, sc, mnx)
	for t := 0; t < T; t++ {
		P, mn, u := YMM(), YMM(), YMM()
		VBROADCASTSS(tp.at(t, 0), P)
		VMULPS(xP, P, P)
		VPMADDWD(tp.at(t, 260), mnx, mn)
		VPSLLQ(Imm(32), mn, u)
		VPADDD(u, mn, mn)
		VCVTDQ2PS(mn, mn)
		VMULPS(P, mn, mn)
		acm := YMM()
		VMOVUPS(accs.Offset(64*t+32), acm)
		VSUBPS(mn, acm, acm)
		VMOVUPS(acm, accs.Offset(64*t+32))
	}
	sumi := make([]VecVirtual, T)
	for k := 0; k < 4; k++ {
		var sl, sh VecVirtual
		lo, hi := YMM(), YMM()
		VMOVDQU(w.Offset(16+32*k), lo)
		VPSRLW(Imm(4), lo, hi)
		VPAND(c.m4, lo, lo)
		VPAND(c.m4, hi, hi)
		sl, sh = q4kScaleVec(sc, 2*k), q4kScaleVec(sc, 2*k+1)
		for t := 0; t < T; t++ {
			pl, ph := YMM(), YMM()
			VPMADDUBSW(tp.at(t, 4+64*k), lo, pl)
			VPMADDUBSW(tp.at(t, 4+64*k+32), hi, ph)
			VPMADDWD(sl, pl, pl)
			VPMADDWD(sh, ph, ph)
			if k == 0 {
				sumi[t] = YMM()
				VPADDD(pl, ph, sumi[t])
			} else {
				VPADDD(pl, sumi[t], sumi[t])
				VPADDD(ph, sumi[t], sumi[t])
			}
		}
	}
	for t := 0; t < T; t++ {
		D, ac := YMM(), YMM()
		VBROADCASTSS(tp.at(t, 0), D)
		VMULPS(xP, D, D)
		VMOVSLDUP(D, D)
		VCVTDQ2PS(sumi[t], sumi[t])
		VMULPS(D, sumi[t], sumi[t])
		VMOVUPS(accs.Offset(64*t), ac)
		VADDPS(sumi[t], ac, ac)
		VMOVUPS(ac, accs.Offset(64*t))
	}
	ADDQ(U32(q4kSize), wp)
	ADDQ(U32(q8kSize), tp.base)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))

	res := make([]VecVirtual, T)
	for t := 0; t < T; t++ {
		acc, accm := YMM(), YMM()
		VMOVUPS(accs.Offset(64*t), acc)
		VMOVUPS(accs.Offset(64*t+32), accm)
		s := hsum8(acc)
		m := hsumOdd(accm)
		VADDSS(m, s, s)
		res[t] = s
	}
	storeTokens(res)
	VZEROUPPER()
	RET()
}
