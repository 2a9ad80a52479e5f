package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// blockKernel describes a block-format dot product by its pieces, from
// which the single-row and the many-rows functions are generated.
type blockKernel struct {
	name         string // dot<name>AVX2, dot<name>RowsAVX2
	twin         string // the pure-Go specification
	wSize, aSize int    // bytes per block of the weight and the activation
	// build emits the loop-invariant setup (inside the current TEXT) and
	// returns the per-row pieces: start zeroes the accumulators, block adds
	// one block, finish reduces to lane 0 of an xmm.
	build func() (start func(), block func(w, a Mem), finish func() VecVirtual)
}

// paramMem is the stack slot of an argument, for use as a memory operand.
func paramMem(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

func genSingle(k blockKernel) {
	name := "dot" + k.name + "AVX2"
	TEXT(name, NOSPLIT, "func(nb int, w, a *byte) float32")
	Doc(name+" is the AVX2 twin of "+k.twin+" over nb > 0 blocks.", "")
	nb := Load(Param("nb"), GP64())
	wp := Load(Param("w"), GP64())
	ap := Load(Param("a"), GP64())
	start, block, finish := k.build()
	start()
	Label(name + "_loop")
	block(Mem{Base: wp}, Mem{Base: ap})
	ADDQ(U32(k.wSize), wp)
	ADDQ(U32(k.aSize), ap)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	s := finish()
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

// prefetchDist is how far ahead (bytes) the many-rows kernels prefetch
// weights.
var prefetchDist = 2048

func genRows(k blockKernel) {
	name := "dot" + k.name + "RowsAVX2"
	TEXT(name, NOSPLIT, "func(nb int, w *byte, wStride int, a *byte, out *float32, nRows int)")
	Doc(name+" sets out[r] = "+k.twin+"(row r) for nRows > 0 rows of nb > 0",
		"blocks, row r at w + r*wStride, each against the same activation a.")
	w := Load(Param("w"), GP64())
	out := Load(Param("out"), GP64())
	start, block, finish := k.build()
	Label(name + "_row")
	wp := GP64()
	MOVQ(w, wp)
	ap := Load(Param("a"), GP64())
	nb := Load(Param("nb"), GP64())
	start()
	Label(name + "_loop")
	for off := 0; off < k.wSize; off += 64 {
		PREFETCHT0(Mem{Base: wp, Disp: prefetchDist + off})
	}
	block(Mem{Base: wp}, Mem{Base: ap})
	ADDQ(U32(k.wSize), wp)
	ADDQ(U32(k.aSize), ap)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	s := finish()
	VMOVSS(s, Mem{Base: out})
	ADDQ(paramMem("wStride"), w)
	ADDQ(U8(4), out)
	DECQ(paramMem("nRows"))
	JNZ(LabelRef(name + "_row"))
	VZEROUPPER()
	RET()
}

// tokenPtrs addresses the activations of up to four tokens from one base
// register: token t at a + t*stride.
type tokenPtrs struct {
	base, s1, s3 Register
}

func newTokenPtrs() *tokenPtrs {
	p := &tokenPtrs{base: Load(Param("a"), GP64()), s1: Load(Param("aStride"), GP64()), s3: GP64()}
	LEAQ(Mem{Base: p.s1, Index: p.s1, Scale: 2}, p.s3)
	return p
}

// at returns the address of byte off of token t's current block.
func (p *tokenPtrs) at(t, off int) Mem {
	switch t {
	case 0:
		return Mem{Base: p.base, Disp: off}
	case 1:
		return Mem{Base: p.base, Index: p.s1, Scale: 1, Disp: off}
	case 2:
		return Mem{Base: p.base, Index: p.s1, Scale: 2, Disp: off}
	case 3:
		return Mem{Base: p.base, Index: p.s3, Scale: 1, Disp: off}
	}
	panic("token index")
}

// storeTokens reduces and stores the per-token results: out[t*outStride].
func storeTokens(res []VecVirtual) {
	out := Load(Param("out"), GP64())
	os := Load(Param("outStride"), GP64())
	SHLQ(U8(2), os)
	for t, r := range res {
		VMOVSS(r, Mem{Base: out})
		if t+1 < len(res) {
			ADDQ(os, out)
		}
	}
}
