package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// floatReduce combines the four accumulators in kernels.floatDotReduce's
// order: W = (V0+V2) + (V1+V3); t[j] = W[j]+W[j+4]; (t0+t1) + (t2+t3).
func floatReduce(acc [4]VecVirtual) VecVirtual {
	VADDPS(acc[2], acc[0], acc[0])
	VADDPS(acc[3], acc[1], acc[1])
	VADDPS(acc[1], acc[0], acc[0])
	hi := XMM()
	VEXTRACTF128(Imm(1), acc[0], hi)
	t := XMM()
	VADDPS(hi, acc[0].AsX(), t)
	VHADDPS(t, t, t)
	VHADDPS(t, t, t)
	return t
}

// genFloatDot emits a float dot product over n elements of width size
// (4: float32, 2: binary16 or bfloat16). load widens 8 elements at m into a
// ymm of float32.
func genFloatDot(name, doc string, size int, load func(m Mem, dst VecVirtual), exact bool) {
	TEXT(name, NOSPLIT, "func(n int, x, y *byte) float32")
	Doc(doc)
	n := Load(Param("n"), GP64())
	xp := Load(Param("x"), GP64())
	yp := Load(Param("y"), GP64())
	x, y := Mem{Base: xp}, Mem{Base: yp}
	var acc [4]VecVirtual
	for k := range acc {
		acc[k] = YMM()
		VXORPS(acc[k], acc[k], acc[k])
	}
	ng := GP64()
	MOVQ(n, ng)
	SHRQ(U8(5), ng)
	JZ(LabelRef(name + "_reduce"))
	Label(name + "_loop")
	for k := 0; k < 4; k++ {
		a, b := YMM(), YMM()
		load(x.Offset(8*size*k), a)
		load(y.Offset(8*size*k), b)
		if exact {
			// The product is exact in float32, so FMA rounds once
			// exactly as VMULPS+VADDPS would.
			VFMADD231PS(b, a, acc[k])
		} else {
			VMULPS(b, a, a)
			VADDPS(a, acc[k], acc[k])
		}
	}
	ADDQ(U32(32*size), xp)
	ADDQ(U32(32*size), yp)
	DECQ(ng)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_reduce")
	s := floatReduce(acc)
	ANDQ(U8(31), n)
	JZ(LabelRef(name + "_done"))
	Label(name + "_tail")
	a, b := YMM(), YMM()
	loadOne(size, load, x, a)
	loadOne(size, load, y, b)
	VMULSS(b.AsX(), a.AsX(), a.AsX())
	VADDSS(a.AsX(), s, s)
	ADDQ(U32(size), xp)
	ADDQ(U32(size), yp)
	DECQ(n)
	JNZ(LabelRef(name + "_tail"))
	Label(name + "_done")
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

// loadOne widens the single element at m into lane 0 of dst.
func loadOne(size int, load func(m Mem, dst VecVirtual), m Mem, dst VecVirtual) {
	switch size {
	case 4:
		VMOVSS(m, dst.AsX())
	case 2:
		r := GP32()
		MOVWLZX(m, r)
		VMOVD(r, dst.AsX())
		load(Mem{}, dst) // register form: widen lane 0
	}
}

// genFloatTile emits the many-rows kernel of a float format for nt tokens
// (1 to 3): for each of nRows rows (wStride bytes apart), nt dot products
// over n elements against the tokens at a, a+aStride, a+2·aStride, written
// to out[t*outStride] (out advancing one float per row). Each dot is the
// arithmetic of genFloatDot, lane for lane (four accumulators per token,
// floatReduce, then the sequential tail), so every output is bit-identical
// to the format's dot; a row's weights are loaded once for the nt tokens.
func genFloatTile(name, doc string, size int, load func(m Mem, dst VecVirtual), exact bool, nt int) {
	TEXT(name, NOSPLIT, "func(n int, w *byte, wStride int, nRows int, a *byte, aStride int, out *float32, outStride int)")
	Doc(doc)
	wrow := Load(Param("w"), GP64())
	outp := Load(Param("out"), GP64())
	as := Load(Param("aStride"), GP64())
	os := Load(Param("outStride"), GP64())
	SHLQ(U8(2), os)
	Label(name + "_row")
	xp := GP64()
	MOVQ(wrow, xp)
	yp := Load(Param("a"), GP64())
	// Token t's element at m (relative to yp): yp + t*aStride + disp.
	tok := func(t, disp int) Mem {
		m := Mem{Base: yp, Disp: disp}
		if t > 0 {
			m.Index, m.Scale = as, uint8(t)
		}
		return m
	}
	acc := make([][4]VecVirtual, nt)
	for t := range acc {
		for k := range acc[t] {
			acc[t][k] = YMM()
			VXORPS(acc[t][k], acc[t][k], acc[t][k])
		}
	}
	ng := Load(Param("n"), GP64())
	SHRQ(U8(5), ng)
	JZ(LabelRef(name + "_reduce"))
	Label(name + "_loop")
	for k := 0; k < 4; k++ {
		wv := YMM()
		load(Mem{Base: xp, Disp: 8 * size * k}, wv)
		for t := 0; t < nt; t++ {
			b := YMM()
			if size == 4 && !exact {
				VMULPS(tok(t, 8*size*k), wv, b)
				VADDPS(b, acc[t][k], acc[t][k])
				continue
			}
			load(tok(t, 8*size*k), b)
			if exact {
				VFMADD231PS(b, wv, acc[t][k])
			} else {
				VMULPS(b, wv, b)
				VADDPS(b, acc[t][k], acc[t][k])
			}
		}
	}
	ADDQ(U32(32*size), xp)
	ADDQ(U32(32*size), yp)
	DECQ(ng)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_reduce")
	s := make([]VecVirtual, nt)
	for t := range s {
		s[t] = floatReduce(acc[t])
	}
	tail := Load(Param("n"), GP64())
	ANDQ(U8(31), tail)
	JZ(LabelRef(name + "_store"))
	Label(name + "_tail")
	wv := YMM()
	loadOne(size, load, Mem{Base: xp}, wv)
	for t := 0; t < nt; t++ {
		b := YMM()
		loadOne(size, load, tok(t, 0), b)
		VMULSS(b.AsX(), wv.AsX(), b.AsX())
		VADDSS(b.AsX(), s[t], s[t])
	}
	ADDQ(U32(size), xp)
	ADDQ(U32(size), yp)
	DECQ(tail)
	JNZ(LabelRef(name + "_tail"))
	Label(name + "_store")
	o := GP64()
	MOVQ(outp, o)
	for t := 0; t < nt; t++ {
		VMOVSS(s[t], Mem{Base: o})
		if t+1 < nt {
			ADDQ(os, o)
		}
	}
	ADDQ(U8(4), outp)
	ADDQ(paramMem("wStride"), wrow)
	DECQ(paramMem("nRows"))
	JNZ(LabelRef(name + "_row"))
	VZEROUPPER()
	RET()
}

func genFloat() {
	type format struct {
		name, twin string
		size       int
		load       func(m Mem, dst VecVirtual)
		exact      bool
		what       string
	}
	formats := []format{
		{"F32", "dotF32", 4, func(m Mem, dst VecVirtual) { VMOVUPS(m, dst) }, false, "float32 elements"},
		{"F16", "dotF16", 2, func(m Mem, dst VecVirtual) {
			if m.Base == nil {
				VCVTPH2PS(dst.AsX(), dst.AsX())
				return
			}
			VCVTPH2PS(m, dst)
		}, true, "binary16 elements; products exact"},
		{"BF16", "dotBF16", 2, func(m Mem, dst VecVirtual) {
			if m.Base == nil {
				VPSLLD(Imm(16), dst.AsX(), dst.AsX())
				return
			}
			VPMOVZXWD(m, dst)
			VPSLLD(Imm(16), dst, dst)
		}, false, "bfloat16 elements"},
	}
	for _, f := range formats {
		genFloatDot("dot"+f.name+"AVX2", fmt.Sprintf("dot%sAVX2 is the AVX2 twin of %s (%s).", f.name, f.twin, f.what), f.size, f.load, f.exact)
	}
	for _, f := range formats {
		for nt := 1; nt <= 3; nt++ {
			name := fmt.Sprintf("tile%sTok%dAVX2", f.name, nt)
			genFloatTile(name, fmt.Sprintf("%s sets out[t*outStride + r] = %s(n, row r, token t) for nRows > 0 rows and %d token(s).", name, f.twin, nt),
				f.size, f.load, f.exact, nt)
		}
	}
}
