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
