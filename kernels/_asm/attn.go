package main

import (
	"fmt"

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
	blockLoopW(name, cnt, 4, body)
}

// blockLoopW is blockLoop wide blocks at a time, then one.
func blockLoopW(name string, cnt Register, wide int, body func(lbl string, w int)) {
	Label(name + "_blk")
	CMPQ(cnt, U8(wide))
	JB(LabelRef(name + "_one"))
	body(fmt.Sprintf("%s_w%d", name, wide), wide)
	SUBQ(U8(wide), cnt)
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
		for _, nh := range []int{2, 4} {
			genAttnScoresHeads(e, nh)
			genAttnValuesHeads(e, nh)
		}
	}
}

// Several query heads at once (a GQA group shares its KV head): each key or
// value vector is loaded once for nh heads, dividing by nh the cache reads
// that bound the one-head kernels (keys and values of a long context live
// in L2 or memory). Pairs take four vectors of eight per head at a time,
// quads (groups of 4 or more, as TinyLlama's 8 or Llama 3's 4) two: 16
// registers hold the accumulators, nh broadcasts and a load. Every output
// element's chain is the same as in the one-head kernels.

// headWidth is how many vectors of eight per head the nh-head kernels
// take at a time.
func headWidth(nh int) int { return 8 / nh }

// headChains emits w chains of FMAs of eight floats for each of nh heads
// (2 or 4): per step, head h's float at bp + h*bOff, broadcast, times the w
// vectors at vp (loaded once for all heads); bp advances four bytes and vp
// vStride bytes a step, for cnt steps. It returns acc[h][i].
func headChains(e attnElem, lbl string, nh, w int, bp, bOff, vp, vStride, cnt Register) [][]VecVirtual {
	acc := make([][]VecVirtual, nh)
	for h := range acc {
		acc[h] = make([]VecVirtual, w)
		for i := range acc[h] {
			acc[h][i] = YMM()
			VXORPS(acc[h][i], acc[h][i], acc[h][i])
		}
	}
	at := []Mem{{Base: bp}, {Base: bp, Index: bOff, Scale: 1}}
	if nh == 4 {
		b3 := GP64()
		LEAQ(Mem{Base: bOff, Index: bOff, Scale: 2}, b3)
		at = append(at, Mem{Base: bp, Index: bOff, Scale: 2}, Mem{Base: bp, Index: b3, Scale: 1})
	}
	Label(lbl + "_step")
	bc := make([]VecVirtual, nh)
	for h := range bc {
		bc[h] = YMM()
		VBROADCASTSS(at[h], bc[h])
	}
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

// storeHeads stores acc[h][i] at out + h*stride + 32i.
func storeHeads(acc [][]VecVirtual, out, stride Register) {
	for h := range acc {
		for i := range acc[h] {
			VMOVUPS(acc[h][i], Mem{Base: out, Disp: 32 * i})
		}
		if h+1 < len(acc) {
			ADDQ(stride, out)
		}
	}
}

func genAttnScoresHeads(e attnElem, nh int) {
	name := fmt.Sprintf("attnScores%d%sAVX2", nh, e.suffix)
	TEXT(name, NOSPLIT, "func(dst *float32, dstStride int, q *float32, hd int, kT *"+e.goType()+", kStride, n8 int)")
	Doc(fmt.Sprintf("%s is kernels.AttnScores%s for nq = %d over n8 > 0 blocks of eight positions", name, e.suffix, nh),
		"(strides in elements; hd > 0).")
	ks := Load(Param("kStride"), GP64())
	e.strideBytes(ks)
	p := GP64() // byte offset of the position block in a row
	XORQ(p, p)
	nb := Load(Param("n8"), GP64())
	blockLoopW(name, nb, headWidth(nh), func(lbl string, w int) {
		// Chains over the dimensions of the queries and key rows.
		qp := Load(Param("q"), GP64())
		hb := Load(Param("hd"), GP64())
		SHLQ(U8(2), hb) // head h's query at q + h*hd floats
		kp := Load(Param("kT"), GP64())
		e.addOffset(p, kp)
		d := Load(Param("hd"), GP64())
		acc := headChains(e, lbl, nh, w, qp, hb, kp, ks, d)
		dp := Load(Param("dst"), GP64())
		ADDQ(p, dp)
		ds := Load(Param("dstStride"), GP64())
		SHLQ(U8(2), ds)
		storeHeads(acc, dp, ds)
		ADDQ(U8(32*w), p)
	})
	VZEROUPPER()
	RET()
}

func genAttnValuesHeads(e attnElem, nh int) {
	name := fmt.Sprintf("attnValues%d%sAVX2", nh, e.suffix)
	TEXT(name, NOSPLIT, "func(out *float32, prob *float32, pStride int, v *"+e.goType()+", vStride, hd8, n int)")
	Doc(fmt.Sprintf("%s is kernels.AttnValues%s for nq = %d and hd = 8*hd8 (strides in", name, e.suffix, nh),
		"elements; hd8, n > 0).")
	vs := Load(Param("vStride"), GP64())
	e.strideBytes(vs)
	o := GP64() // byte offset of the dimension block
	XORQ(o, o)
	nd := Load(Param("hd8"), GP64())
	blockLoopW(name, nd, headWidth(nh), func(lbl string, w int) {
		// Chains over the positions' probabilities and value rows.
		pp := Load(Param("prob"), GP64())
		ps := Load(Param("pStride"), GP64())
		SHLQ(U8(2), ps) // head h's probabilities at prob + h*pStride
		vp := Load(Param("v"), GP64())
		e.addOffset(o, vp)
		cnt := Load(Param("n"), GP64())
		acc := headChains(e, lbl, nh, w, pp, ps, vp, vs, cnt)
		op := Load(Param("out"), GP64())
		ADDQ(o, op)
		hb := Load(Param("hd8"), GP64())
		SHLQ(U8(5), hb) // head h's outputs at out + h*hd floats
		storeHeads(acc, op, hb)
		ADDQ(U8(32*w), o)
	})
	VZEROUPPER()
	RET()
}
