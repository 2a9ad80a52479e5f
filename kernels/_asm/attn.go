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

func genAttnScores() {
	name := "attnScoresAVX2"
	TEXT(name, NOSPLIT, "func(dst *float32, dstStride int, q *float32, nq, hd int, kT *float32, kStride, n8 int)")
	Doc(name+" is kernels.AttnScores over n8 > 0 blocks of eight positions (strides in floats;",
		"nq, hd > 0).")
	ks := Load(Param("kStride"), GP64())
	SHLQ(U8(2), ks)
	ds := Load(Param("dstStride"), GP64())
	SHLQ(U8(2), ds)
	p := GP64() // byte offset of the position block in a row
	XORQ(p, p)
	nb := Load(Param("n8"), GP64())
	Label(name + "_blk")
	CMPQ(nb, U8(4))
	JB(LabelRef(name + "_one"))
	attnScoresBody(name+"_w4", 4, p, ks, ds)
	ADDQ(U8(128), p)
	SUBQ(U8(4), nb)
	JMP(LabelRef(name + "_next"))
	Label(name + "_one")
	attnScoresBody(name+"_w1", 1, p, ks, ds)
	ADDQ(U8(32), p)
	DECQ(nb)
	Label(name + "_next")
	TESTQ(nb, nb)
	JNZ(LabelRef(name + "_blk"))
	VZEROUPPER()
	RET()
}

// attnScoresBody: w vectors (8w positions from byte offset p) for every
// query head.
func attnScoresBody(lbl string, w int, p, ks, ds Register) {
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
	ADDQ(p, kp)
	d := Load(Param("hd"), GP64())
	Label(lbl + "_d")
	qb := YMM()
	VBROADCASTSS(Mem{Base: qp}, qb)
	for i := range acc {
		VFMADD231PS(Mem{Base: kp, Disp: 32 * i}, qb, acc[i])
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

func genAttnValues() {
	name := "attnValuesAVX2"
	TEXT(name, NOSPLIT, "func(out *float32, prob *float32, pStride, nq int, v *float32, vStride, hd8, n int)")
	Doc(name+" is kernels.AttnValues for hd = 8*hd8 (strides in floats; nq, hd8, n > 0).", "")
	vs := Load(Param("vStride"), GP64())
	SHLQ(U8(2), vs)
	op := Load(Param("out"), GP64())
	pg := Load(Param("prob"), GP64()) // head g's probabilities
	g := Load(Param("nq"), GP64())
	Label(name + "_head")
	o := GP64() // byte offset of the dimension block
	XORQ(o, o)
	nd := Load(Param("hd8"), GP64())
	Label(name + "_blk")
	CMPQ(nd, U8(4))
	JB(LabelRef(name + "_one"))
	attnValuesBody(name+"_w4", 4, op, pg, o, vs)
	ADDQ(U8(128), o)
	SUBQ(U8(4), nd)
	JMP(LabelRef(name + "_next"))
	Label(name + "_one")
	attnValuesBody(name+"_w1", 1, op, pg, o, vs)
	ADDQ(U8(32), o)
	DECQ(nd)
	Label(name + "_next")
	TESTQ(nd, nd)
	JNZ(LabelRef(name + "_blk"))
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
func attnValuesBody(lbl string, w int, op, pg, o, vs Register) {
	acc := make([]VecVirtual, w)
	for i := range acc {
		acc[i] = YMM()
		VXORPS(acc[i], acc[i], acc[i])
	}
	pp := GP64()
	MOVQ(pg, pp)
	vp := Load(Param("v"), GP64())
	ADDQ(o, vp)
	cnt := Load(Param("n"), GP64())
	Label(lbl + "_p")
	pb := YMM()
	VBROADCASTSS(Mem{Base: pp}, pb)
	for i := range acc {
		VFMADD231PS(Mem{Base: vp, Disp: 32 * i}, pb, acc[i])
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
	genAttnScores()
	genAttnValues()
}
