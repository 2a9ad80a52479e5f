package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Attention kernels (kernels.AttnScores and kernels.AttnValues): every
// output element is a chain of VFMADD231PS in a fixed order from +0, eight
// positions (scores) or eight dimensions (values) to a register, up to four
// independent chains at a time.

// attnElem is the element type of the cache the kernels read: float32, or
// binary16 widened by VCVTPH2PS on load (exact).
type attnElem struct {
	suffix string // "" or "F16": attnScores<suffix>AVX2, …
	size   int    // bytes per element
}

var (
	elemF32 = attnElem{"", 4}
	elemF16 = attnElem{"F16", 2}
)

// load widens the eight elements at m into dst.
func (e attnElem) load(m Mem, dst VecVirtual) {
	if e.size == 2 {
		VCVTPH2PS(m, dst)
		return
	}
	VMOVUPS(m, dst)
}

// strideBytes turns a stride in elements (in r) into bytes.
func (e attnElem) strideBytes(r Register) {
	if e.size == 4 {
		SHLQ(U8(2), r)
	} else {
		SHLQ(U8(1), r)
	}
}

// addOffset adds to ptr the cache offset of byte offset off of a float32
// row (the same element index).
func (e attnElem) addOffset(off, ptr Register) {
	if e.size == 4 {
		ADDQ(off, ptr)
		return
	}
	t := GP64()
	MOVQ(off, t)
	SHRQ(U8(1), t)
	ADDQ(t, ptr)
}

func (e attnElem) goType() string {
	if e.size == 2 {
		return "uint16"
	}
	return "float32"
}

// blockLoop emits a loop over cnt blocks of eight floats, four at a time
// while four remain, then one: body emits w blocks and advances its offset.
func blockLoop(name string, cnt Register, body func(lbl string, w int)) {
	Label(name + "_blk")
	CMPQ(cnt, U8(4))
	JB(LabelRef(name + "_one"))
	body(name+"_w4", 4)
	SUBQ(U8(4), cnt)
	JMP(LabelRef(name + "_next"))
	Label(name + "_one")
	body(name+"_w1", 1)
	DECQ(cnt)
	Label(name + "_next")
	TESTQ(cnt, cnt)
	JNZ(LabelRef(name + "_blk"))
}

func genAttnScores(e attnElem) {
	name := "attnScores" + e.suffix + "AVX2"
	TEXT(name, NOSPLIT, "func(dst *float32, dstStride int, q *float32, nq, hd int, kT *"+e.goType()+", kStride, n8 int)")
	Doc(name+" is kernels.AttnScores"+e.suffix+" over n8 > 0 blocks of eight positions (strides in",
		"elements; nq, hd > 0).")
	ks := Load(Param("kStride"), GP64())
	e.strideBytes(ks)
	ds := Load(Param("dstStride"), GP64())
	SHLQ(U8(2), ds)
	p := GP64() // byte offset of the position block in a row
	XORQ(p, p)
	nb := Load(Param("n8"), GP64())
	blockLoop(name, nb, func(lbl string, w int) {
		attnScoresBody(e, lbl, w, p, ks, ds)
		ADDQ(U8(32*w), p)
	})
	VZEROUPPER()
	RET()
}

// attnScoresBody: w vectors (8w positions from byte offset p) for every
// query head.
func attnScoresBody(e attnElem, lbl string, w int, p, ks, ds Register) {
	qp := Load(Param("q"), GP64())
	dp := Load(Param("dst"), GP64())
	ADDQ(p, dp)
	g := Load(Param("nq"), GP64())
	Label(lbl + "_head")
	acc := make([]VecVirtual, w)
	for i := range acc {
		acc[i] = YMM()
		VXORPS(acc[i], acc[i], acc[i])
	}
	kp := Load(Param("kT"), GP64())
	e.addOffset(p, kp)
	d := Load(Param("hd"), GP64())
	Label(lbl + "_d")
	qb := YMM()
	VBROADCASTSS(Mem{Base: qp}, qb)
	for i := range acc {
		if e.size == 4 {
			VFMADD231PS(Mem{Base: kp, Disp: 32 * i}, qb, acc[i])
			continue
		}
		k := YMM()
		e.load(Mem{Base: kp, Disp: 8 * e.size * i}, k)
		VFMADD231PS(k, qb, acc[i])
	}
	ADDQ(U8(4), qp)
	ADDQ(ks, kp)
	DECQ(d)
	JNZ(LabelRef(lbl + "_d"))
	for i := range acc {
		VMOVUPS(acc[i], Mem{Base: dp, Disp: 32 * i})
	}
	ADDQ(ds, dp)
	DECQ(g)
	JNZ(LabelRef(lbl + "_head"))
}

func genAttnValues(e attnElem) {
	name := "attnValues" + e.suffix + "AVX2"
	TEXT(name, NOSPLIT, "func(out *float32, prob *float32, pStride, nq int, v *"+e.goType()+", vStride, hd8, n int)")
	Doc(name+" is kernels.AttnValues"+e.suffix+" for hd = 8*hd8 (strides in elements; nq, hd8, n > 0).", "")
	vs := Load(Param("vStride"), GP64())
	e.strideBytes(vs)
	op := Load(Param("out"), GP64())
	pg := Load(Param("prob"), GP64()) // head g's probabilities
	g := Load(Param("nq"), GP64())
	Label(name + "_head")
	o := GP64() // byte offset of the dimension block
	XORQ(o, o)
	nd := Load(Param("hd8"), GP64())
	blockLoop(name, nd, func(lbl string, w int) {
		attnValuesBody(e, lbl, w, op, pg, o, vs)
		ADDQ(U8(32*w), o)
	})
	ADDQ(o, op) // next head's outputs follow
	ps := Load(Param("pStride"), GP64())
	SHLQ(U8(2), ps)
	ADDQ(ps, pg)
	DECQ(g)
	JNZ(LabelRef(name + "_head"))
	VZEROUPPER()
	RET()
}

// attnValuesBody: w vectors (8w dimensions from byte offset o) of one
// head, over all positions.
func attnValuesBody(e attnElem, lbl string, w int, op, pg, o, vs Register) {
	acc := make([]VecVirtual, w)
	for i := range acc {
		acc[i] = YMM()
		VXORPS(acc[i], acc[i], acc[i])
	}
	pp := GP64()
	MOVQ(pg, pp)
	vp := Load(Param("v"), GP64())
	e.addOffset(o, vp)
	cnt := Load(Param("n"), GP64())
	Label(lbl + "_p")
	pb := YMM()
	VBROADCASTSS(Mem{Base: pp}, pb)
	for i := range acc {
		if e.size == 4 {
			VFMADD231PS(Mem{Base: vp, Disp: 32 * i}, pb, acc[i])
			continue
		}
		x := YMM()
		e.load(Mem{Base: vp, Disp: 8 * e.size * i}, x)
		VFMADD231PS(x, pb, acc[i])
	}
	ADDQ(U8(4), pp)
	ADDQ(vs, vp)
	DECQ(cnt)
	JNZ(LabelRef(lbl + "_p"))
	for i := range acc {
		VMOVUPS(acc[i], Mem{Base: op, Index: o, Scale: 1, Disp: 32 * i})
	}
}

func genAttn() {
	for _, e := range []attnElem{elemF32, elemF16} {
		genAttnScores(e)
		genAttnValues(e)
		genAttnScores2(e)
		genAttnValues2(e)
		genAttnScores4(e)
		genAttnValues4(e)
	}
}

// Two query heads at once (a GQA group shares its KV head): each key or
// value vector is loaded once for both heads, halving the cache traffic that
// bounds the one-head kernels (keys and values of a long context live in L2).
// Every output element's chain is the same as in the one-head kernels.

func genAttnScores2(e attnElem) {
	name := "attnScores2" + e.suffix + "AVX2"
	TEXT(name, NOSPLIT, "func(dst *float32, dstStride int, q *float32, hd int, kT *"+e.goType()+", kStride, n8 int)")
	Doc(name+" is kernels.AttnScores"+e.suffix+" for nq = 2 over n8 > 0 blocks of eight positions",
		"(strides in elements; hd > 0).")
	ks := Load(Param("kStride"), GP64())
	e.strideBytes(ks)
	ds := Load(Param("dstStride"), GP64())
	SHLQ(U8(2), ds)
	p := GP64()
	XORQ(p, p)
	nb := Load(Param("n8"), GP64())
	blockLoop(name, nb, func(lbl string, w int) {
		attnScores2Body(e, lbl, w, p, ks, ds)
		ADDQ(U8(32*w), p)
	})
	VZEROUPPER()
	RET()
}

// pairChains emits w chains of FMAs of eight floats for each of two heads:
// per step, the floats at bp (head 0) and bp+bOff (head 1), broadcast, times
// the w vectors at vp (loaded once for both); bp advances four bytes and vp
// vStride bytes a step, for cnt steps. It returns the accumulators.
func pairChains(e attnElem, lbl string, w int, bp, bOff, vp, vStride, cnt Register) (acc0, acc1 []VecVirtual) {
	acc0, acc1 = make([]VecVirtual, w), make([]VecVirtual, w)
	for i := 0; i < w; i++ {
		acc0[i], acc1[i] = YMM(), YMM()
		VXORPS(acc0[i], acc0[i], acc0[i])
		VXORPS(acc1[i], acc1[i], acc1[i])
	}
	Label(lbl + "_step")
	b0, b1 := YMM(), YMM()
	VBROADCASTSS(Mem{Base: bp}, b0)
	VBROADCASTSS(Mem{Base: bp, Index: bOff, Scale: 1}, b1)
	for i := 0; i < w; i++ {
		t := YMM()
		e.load(Mem{Base: vp, Disp: 8 * e.size * i}, t)
		VFMADD231PS(t, b0, acc0[i])
		VFMADD231PS(t, b1, acc1[i])
	}
	ADDQ(U8(4), bp)
	ADDQ(vStride, vp)
	DECQ(cnt)
	JNZ(LabelRef(lbl + "_step"))
	return acc0, acc1
}

// attnScores2Body: w vectors (8w positions from byte offset p) for both
// heads: chains over the dimensions of the queries and key rows.
func attnScores2Body(e attnElem, lbl string, w int, p, ks, ds Register) {
	qp := Load(Param("q"), GP64())
	hb := Load(Param("hd"), GP64())
	SHLQ(U8(2), hb) // head 1's query follows head 0's
	kp := Load(Param("kT"), GP64())
	e.addOffset(p, kp)
	d := Load(Param("hd"), GP64())
	acc0, acc1 := pairChains(e, lbl, w, qp, hb, kp, ks, d)
	dp := Load(Param("dst"), GP64())
	ADDQ(p, dp)
	for i := 0; i < w; i++ {
		VMOVUPS(acc0[i], Mem{Base: dp, Disp: 32 * i})
		VMOVUPS(acc1[i], Mem{Base: dp, Index: ds, Scale: 1, Disp: 32 * i})
	}
}

func genAttnValues2(e attnElem) {
	name := "attnValues2" + e.suffix + "AVX2"
	TEXT(name, NOSPLIT, "func(out *float32, prob *float32, pStride int, v *"+e.goType()+", vStride, hd8, n int)")
	Doc(name+" is kernels.AttnValues"+e.suffix+" for nq = 2 and hd = 8*hd8 (strides in",
		"elements; hd8, n > 0).")
	vs := Load(Param("vStride"), GP64())
	e.strideBytes(vs)
	o := GP64()
	XORQ(o, o)
	nd := Load(Param("hd8"), GP64())
	blockLoop(name, nd, func(lbl string, w int) {
		attnValues2Body(e, lbl, w, o, vs)
		ADDQ(U8(32*w), o)
	})
	VZEROUPPER()
	RET()
}

// attnValues2Body: w vectors (8w dimensions from byte offset o) of both
// heads: chains over the positions' probabilities and value rows.
func attnValues2Body(e attnElem, lbl string, w int, o, vs Register) {
	pp := Load(Param("prob"), GP64())
	ps := Load(Param("pStride"), GP64())
	SHLQ(U8(2), ps) // head 1's probabilities
	vp := Load(Param("v"), GP64())
	e.addOffset(o, vp)
	cnt := Load(Param("n"), GP64())
	acc0, acc1 := pairChains(e, lbl, w, pp, ps, vp, vs, cnt)
	op := Load(Param("out"), GP64())
	ADDQ(o, op)
	hb := Load(Param("hd8"), GP64())
	SHLQ(U8(5), hb) // head 1's outputs follow head 0's hd floats
	for i := 0; i < w; i++ {
		VMOVUPS(acc0[i], Mem{Base: op, Disp: 32 * i})
		VMOVUPS(acc1[i], Mem{Base: op, Index: hb, Scale: 1, Disp: 32 * i})
	}
}

// Four query heads at once (GQA groups of 4 or more, as TinyLlama's 8 or
// Llama 3's 4): each key or value vector is loaded once for four heads,
// halving again the cache reads of a long context. Two vectors of eight
// per head at a time (16 registers: 8 accumulators, 4 broadcasts, a load).
// Every output element's chain is the same as in the one-head kernels.

// blockLoop2 is blockLoop two blocks at a time, then one.
func blockLoop2(name string, cnt Register, body func(lbl string, w int)) {
	Label(name + "_blk")
	CMPQ(cnt, U8(2))
	JB(LabelRef(name + "_one"))
	body(name+"_w2", 2)
	SUBQ(U8(2), cnt)
	JMP(LabelRef(name + "_next"))
	Label(name + "_one")
	body(name+"_w1", 1)
	DECQ(cnt)
	Label(name + "_next")
	TESTQ(cnt, cnt)
	JNZ(LabelRef(name + "_blk"))
}

// quadChains is pairChains for four heads: head h's float at bp + h*bOff.
func quadChains(e attnElem, lbl string, w int, bp, bOff, vp, vStride, cnt Register) [4][]VecVirtual {
	var acc [4][]VecVirtual
	for h := range acc {
		acc[h] = make([]VecVirtual, w)
		for i := 0; i < w; i++ {
			acc[h][i] = YMM()
			VXORPS(acc[h][i], acc[h][i], acc[h][i])
		}
	}
	b3 := GP64()
	LEAQ(Mem{Base: bOff, Index: bOff, Scale: 2}, b3)
	Label(lbl + "_step")
	var bc [4]VecVirtual
	for h := range bc {
		bc[h] = YMM()
	}
	VBROADCASTSS(Mem{Base: bp}, bc[0])
	VBROADCASTSS(Mem{Base: bp, Index: bOff, Scale: 1}, bc[1])
	VBROADCASTSS(Mem{Base: bp, Index: bOff, Scale: 2}, bc[2])
	VBROADCASTSS(Mem{Base: bp, Index: b3, Scale: 1}, bc[3])
	for i := 0; i < w; i++ {
		t := YMM()
		e.load(Mem{Base: vp, Disp: 8 * e.size * i}, t)
		for h := range bc {
			VFMADD231PS(t, bc[h], acc[h][i])
		}
	}
	ADDQ(U8(4), bp)
	ADDQ(vStride, vp)
	DECQ(cnt)
	JNZ(LabelRef(lbl + "_step"))
	return acc
}

func genAttnScores4(e attnElem) {
	name := "attnScores4" + e.suffix + "AVX2"
	TEXT(name, NOSPLIT, "func(dst *float32, dstStride int, q *float32, hd int, kT *"+e.goType()+", kStride, n8 int)")
	Doc(name+" is kernels.AttnScores"+e.suffix+" for nq = 4 over n8 > 0 blocks of eight positions",
		"(strides in elements; hd > 0).")
	ks := Load(Param("kStride"), GP64())
	e.strideBytes(ks)
	p := GP64()
	XORQ(p, p)
	nb := Load(Param("n8"), GP64())
	blockLoop2(name, nb, func(lbl string, w int) {
		qp := Load(Param("q"), GP64())
		hb := Load(Param("hd"), GP64())
		SHLQ(U8(2), hb) // head h's query at q + h*hd floats
		kp := Load(Param("kT"), GP64())
		e.addOffset(p, kp)
		d := Load(Param("hd"), GP64())
		acc := quadChains(e, lbl, w, qp, hb, kp, ks, d)
		dp := Load(Param("dst"), GP64())
		ADDQ(p, dp)
		ds := Load(Param("dstStride"), GP64())
		SHLQ(U8(2), ds)
		for h := range acc {
			for i := 0; i < w; i++ {
				VMOVUPS(acc[h][i], Mem{Base: dp, Disp: 32 * i})
			}
			if h < 3 {
				ADDQ(ds, dp)
			}
		}
		ADDQ(U8(32*w), p)
	})
	VZEROUPPER()
	RET()
}

func genAttnValues4(e attnElem) {
	name := "attnValues4" + e.suffix + "AVX2"
	TEXT(name, NOSPLIT, "func(out *float32, prob *float32, pStride int, v *"+e.goType()+", vStride, hd8, n int)")
	Doc(name+" is kernels.AttnValues"+e.suffix+" for nq = 4 and hd = 8*hd8 (strides in",
		"elements; hd8, n > 0).")
	vs := Load(Param("vStride"), GP64())
	e.strideBytes(vs)
	o := GP64()
	XORQ(o, o)
	nd := Load(Param("hd8"), GP64())
	blockLoop2(name, nd, func(lbl string, w int) {
		pp := Load(Param("prob"), GP64())
		ps := Load(Param("pStride"), GP64())
		SHLQ(U8(2), ps) // head h's probabilities at prob + h*pStride
		vp := Load(Param("v"), GP64())
		e.addOffset(o, vp)
		cnt := Load(Param("n"), GP64())
		acc := quadChains(e, lbl, w, pp, ps, vp, vs, cnt)
		op := Load(Param("out"), GP64())
		ADDQ(o, op)
		hb := Load(Param("hd8"), GP64())
		SHLQ(U8(5), hb) // head h's outputs at out + h*hd floats
		for h := range acc {
			for i := 0; i < w; i++ {
				VMOVUPS(acc[h][i], Mem{Base: op, Disp: 32 * i})
			}
			if h < 3 {
				ADDQ(hb, op)
			}
		}
		ADDQ(U8(32*w), o)
	})
	VZEROUPPER()
	RET()
}
