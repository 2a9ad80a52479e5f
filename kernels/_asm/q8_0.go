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
	d := YMM()
	VBROADCASTSS(x, d)
	return d
}

// q8_0Block adds one Q8_0·Q8_0 block to acc (kernels.dotQ8_0Q8_0) with the
// VPSIGNB trick: |w| (unsigned, exact for -128) times a with w's sign. That is
// exact unless an activation byte is -128 facing a negative weight (-(-128)
// wraps), which needs an activation block no Q8_0 conversion produces except
// with a zero scale, where the block adds ±0 either way.
func q8_0Block(w, a Mem, ones, acc VecVirtual) {
	d := blockScale(w, a)
	x, y := YMM(), YMM()
	VMOVDQU(w.Offset(2), x)
	VMOVDQU(a.Offset(2), y)
	VPSIGNB(x, y, y)
	VPABSB(x, x)
	VPMADDUBSW(y, x, x)
	VPMADDWD(ones, x, x)
	VCVTDQ2PS(x, x)
	VMULPS(d, x, x)
	VADDPS(x, acc, acc)
}

var q8_0Kernel = blockKernel{
	name: "Q8_0", twin: "dotQ8_0Q8_0", wSize: q8_0Size, aSize: q8_0Size,
	build: func() (func(), func(w, a Mem), func() VecVirtual) {
		ones, acc := YMM(), YMM()
		VMOVDQU(cOnes16, ones)
		return func() { VXORPS(acc, acc, acc) },
			func(w, a Mem) { q8_0Block(w, a, ones, acc) },
			func() VecVirtual { return hsum8(acc) }
	},
}

// genQ8_0: a four-blocks-per-iteration variant sharing one VCVTPH2PS for
// the eight scales ran no faster (the acc dependency chain and the shared
// core dominate), so the loop stays one block at a time.
func genQ8_0() {
	genSingle(q8_0Kernel)
	genQ8_0Rows()
	genQ8_0Tokens()
}

// genQ8_0Rows: the many-rows (decode) kernel takes blocks four at a time,
// converting the eight binary16 scales of the four weight and activation
// blocks with two VCVTPH2PS and one VMULPS (the scales are gathered in
// general-purpose registers, idle otherwise) and broadcasting each block's
// product with VPERMPS; a tail of nb%4 blocks goes one at a time. The
// per-block arithmetic and the accumulation order are those of q8_0Block,
// so every output is dotQ8_0Q8_0's. (Measured on the project's machine
// kind: 2× the one-block loop's speed on L3-resident weights.)
func genQ8_0Rows() {
	name := "dotQ8_0RowsAVX2"
	TEXT(name, NOSPLIT, "func(nb int, w *byte, wStride int, a *byte, out *float32, nRows int)")
	Doc(name+" sets out[r] = dotQ8_0Q8_0(row r) for nRows > 0 rows of nb > 0",
		"blocks, row r at w + r*wStride, each against the same activation a.")
	w := Load(Param("w"), GP64())
	out := Load(Param("out"), GP64())
	ones := YMM()
	VMOVDQU(cOnes16, ones)
	var idx [4]VecVirtual
	for j := 1; j < 4; j++ {
		idx[j] = YMM()
		VMOVDQU(cPermBcast.Offset(32*j), idx[j])
	}
	acc := YMM()
	Label(name + "_row")
	wp := GP64()
	MOVQ(w, wp)
	ap := Load(Param("a"), GP64())
	n := Load(Param("nb"), GP64())
	SHRQ(U8(2), n)
	VXORPS(acc, acc, acc)
	JZ(LabelRef(name + "_tail"))
	Label(name + "_loop4")
	for off := 0; off < 4*q8_0Size; off += 64 {
		PREFETCHT0(Mem{Base: wp, Disp: prefetchDist + off})
	}
	gather := func(p Register) VecVirtual {
		g, u := GP64(), GP64()
		MOVWQZX(Mem{Base: p}, g)
		for j := 1; j < 4; j++ {
			MOVWQZX(Mem{Base: p, Disp: q8_0Size * j}, u)
			SHLQ(U8(16*j), u)
			ORQ(u, g)
		}
		x := XMM()
		VMOVQ(g, x)
		VCVTPH2PS(x, x)
		return x
	}
	xw := gather(wp)
	xa := gather(ap)
	VMULPS(xa, xw, xw) // d_j = fp16(x_j.d) * fp16(y_j.d), j < 4
	for j := 0; j < 4; j++ {
		d := YMM()
		if j == 0 {
			VBROADCASTSS(xw, d)
		} else {
			VPERMPS(xw.AsY(), idx[j], d)
		}
		x, y := YMM(), YMM()
		VMOVDQU(Mem{Base: wp, Disp: q8_0Size*j + 2}, x)
		VMOVDQU(Mem{Base: ap, Disp: q8_0Size*j + 2}, y)
		VPSIGNB(x, y, y)
		VPABSB(x, x)
		VPMADDUBSW(y, x, x)
		VPMADDWD(ones, x, x)
		VCVTDQ2PS(x, x)
		VMULPS(d, x, x)
		VADDPS(x, acc, acc)
	}
	ADDQ(U32(4*q8_0Size), wp)
	ADDQ(U32(4*q8_0Size), ap)
	DECQ(n)
	JNZ(LabelRef(name + "_loop4"))
	Label(name + "_tail")
	m := Load(Param("nb"), GP64())
	ANDQ(U8(3), m)
	JZ(LabelRef(name + "_done"))
	Label(name + "_loop1")
	q8_0Block(Mem{Base: wp}, Mem{Base: ap}, ones, acc)
	ADDQ(U32(q8_0Size), wp)
	ADDQ(U32(q8_0Size), ap)
	DECQ(m)
	JNZ(LabelRef(name + "_loop1"))
	Label(name + "_done")
	s := hsum8(acc)
	VMOVSS(s, Mem{Base: out})
	ADDQ(paramMem("wStride"), w)
	ADDQ(U8(4), out)
	DECQ(paramMem("nRows"))
	JNZ(LabelRef(name + "_row"))
	VZEROUPPER()
	RET()
}

// genQ8_0Tokens: one Q8_0 row against four tokens. |w| and w's binary16
// scale are shared; the four activation scales are gathered in
// general-purpose registers and converted with one VCVTPH2PS.
func genQ8_0Tokens() {
	name := "dotQ8_0Tok4AVX2"
	TEXT(name, NOSPLIT, "func(nb int, w *byte, a *byte, aStride int, out *float32, outStride int)")
	Doc(name+" sets out[t*outStride] = dotQ8_0Q8_0(w, token t) for t < 4,",
		"token t's activation at a + t*aStride; nb > 0 blocks.")
	nb := Load(Param("nb"), GP64())
	wp := Load(Param("w"), GP64())
	tp := newTokenPtrs()
	w := Mem{Base: wp}
	const T = 4
	ones := YMM()
	VMOVDQU(cOnes16, ones)
	var idx [T]VecVirtual
	for t := 1; t < T; t++ {
		idx[t] = YMM()
		VMOVDQU(cPermBcast.Offset(32*t), idx[t])
	}
	acc := make([]VecVirtual, T)
	for t := range acc {
		acc[t] = YMM()
		VXORPS(acc[t], acc[t], acc[t])
	}
	Label(name + "_loop")
	// D4 = [fp16(x.d)*fp16(y_t.d) for t < 4].
	r, u := GP64(), GP64()
	MOVWQZX(tp.at(0, 0), r)
	for t := 1; t < T; t++ {
		MOVWQZX(tp.at(t, 0), u)
		SHLQ(U8(16*t), u)
		ORQ(u, r)
	}
	xd := GP32()
	MOVWLZX(w, xd)
	D4, X := XMM(), XMM()
	VMOVQ(r, D4)
	VCVTPH2PS(D4, D4)
	VMOVD(xd, X)
	VCVTPH2PS(X, X)
	VBROADCASTSS(X, X)
	VMULPS(D4, X, D4)
	x, ax := YMM(), YMM()
	VMOVDQU(w.Offset(2), x)
	VPABSB(x, ax)
	for t := 0; t < T; t++ {
		d, y := YMM(), YMM()
		if t == 0 {
			VBROADCASTSS(D4, d)
		} else {
			VPERMPS(D4.AsY(), idx[t], d)
		}
		VMOVDQU(tp.at(t, 2), y)
		VPSIGNB(x, y, y)
		VPMADDUBSW(y, ax, y)
		VPMADDWD(ones, y, y)
		VCVTDQ2PS(y, y)
		VMULPS(d, y, y)
		VADDPS(y, acc[t], acc[t])
	}
	ADDQ(U32(q8_0Size), wp)
	ADDQ(U32(q8_0Size), tp.base)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	res := make([]VecVirtual, T)
	for t := range acc {
		res[t] = hsum8(acc[t])
	}
	storeTokens(res)
	VZEROUPPER()
	RET()
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
