package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

const (
	q8_0Size = 34
	q5_0Size = 22
)

// blockScale returns float32(fp16(w.d) * fp16(a.d)) broadcast to 8 lanes,
// for the 32-element block formats whose binary16 scale comes first.
func blockScale(w, a Mem) VecVirtual {
	d := YMM()
	VBROADCASTSS(blockScaleScalar(w, a), d)
	return d
}

// blockScaleScalar is blockScale in lane 0 of an xmm.
func blockScaleScalar(w, a Mem) VecVirtual {
	r1, r2 := GP32(), GP32()
	MOVWLZX(w, r1)
	MOVWLZX(a, r2)
	SHLL(U8(16), r2)
	ORL(r2, r1)
	x, t := XMM(), XMM()
	VMOVD(r1, x)
	VCVTPH2PS(x, x)
	VMOVSHDUP(x, t)
	VMULSS(t, x, x)
	return x
}

// q5_0Block adds one Q5_0·Q8_0 block to acc (kernels.dotQ5_0Q8_0). The
// weights are used unsigned (q in 0..31): Σ(q-16)·y = Σq·y - Σ16·y, both
// VPMADDUBSW sums exact in int16, so the result is exact for every input.
func q5_0Block(w, a Mem, m4, b16, ones, allOnes, acc VecVirtual) {
	d := blockScale(w, a)
	lo := XMM()
	VMOVDQU(w.Offset(6), lo)
	hi := XMM()
	VPSRLW(Imm(4), lo, hi)
	u := YMM()
	VINSERTI128(Imm(1), hi, lo.AsY(), u)
	VPAND(m4, u, u)
	h := YMM()
	VPBROADCASTD(w.Offset(2), h)
	VPSHUFB(cBitsShuf, h, h)
	VPOR(cBitsMask, h, h)
	VPCMPEQB(allOnes, h, h)
	VPAND(b16, h, h)
	VPOR(h, u, u)
	VPMADDUBSW(a.Offset(2), u, u)
	VPMADDUBSW(a.Offset(2), b16, h)
	VPSUBW(h, u, u)
	VPMADDWD(ones, u, u)
	VCVTDQ2PS(u, u)
	VMULPS(d, u, u)
	VADDPS(u, acc, acc)
}

var q5_0Kernel = blockKernel{
	name: "Q5_0", twin: "dotQ5_0Q8_0", wSize: q5_0Size, aSize: q8_0Size,
	build: func() (func(), func(w, a Mem), func() VecVirtual) {
		m4, b16, ones, allOnes, acc := YMM(), YMM(), YMM(), YMM(), YMM()
		VMOVDQU(cM4, m4)
		VMOVDQU(c16s, b16)
		VMOVDQU(cOnes16, ones)
		VPCMPEQB(allOnes, allOnes, allOnes)
		return func() { VXORPS(acc, acc, acc) },
			func(w, a Mem) { q5_0Block(w, a, m4, b16, ones, allOnes, acc) },
			func() VecVirtual { return hsum8(acc) }
	},
}

func genQ5_0() {
	genSingle(q5_0Kernel)
	genRows(q5_0Kernel)
}
