package main

import (
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

func genFloat() {
	genFloatDot("dotF32AVX2", "dotF32AVX2 is the AVX2 twin of dotF32 (float32 elements).", 4,
		func(m Mem, dst VecVirtual) { VMOVUPS(m, dst) }, false)
	genFloatDot("dotF16AVX2", "dotF16AVX2 is the AVX2 twin of dotF16 (binary16 elements; products exact).", 2,
		func(m Mem, dst VecVirtual) {
			if m.Base == nil {
				VCVTPH2PS(dst.AsX(), dst.AsX())
				return
			}
			VCVTPH2PS(m, dst)
		}, true)
	genFloatDot("dotBF16AVX2", "dotBF16AVX2 is the AVX2 twin of dotBF16 (bfloat16 elements).", 2,
		func(m Mem, dst VecVirtual) {
			if m.Base == nil {
				VPSLLD(Imm(16), dst.AsX(), dst.AsX())
				return
			}
			VPMOVZXWD(m, dst)
			VPSLLD(Imm(16), dst, dst)
		}, false)
}
