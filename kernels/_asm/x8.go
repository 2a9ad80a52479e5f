package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Kernels of the block formats whose dot product accumulates one float per
// row and super-block with a fused multiply-add (kernels.dotQ8_0Q8_0,
// dotQ4_KQ8_K, dotQ6_KQ8_K):
//
//   - dot<T>AVX2: one row in the file's layout (tails, the Dot API);
//   - x8<T>Tok<N>AVX2: one group of eight rows in kernels' x8 layout
//     against N = 1..4 tokens (prompts, batched decode);
//   - x8<T>RowsAVX2: many row groups against one token (decode), with
//     software prefetch.
//
// In the x8 kernels each of the eight 32-bit lanes of a register belongs to
// one row; an activation word is broadcast to every lane. Integer sums are
// exact; the float step per super-block is VCVTDQ2PS, VMULPS for the scale
// and VFMADD231PS, which is kernels.fma32.

// x8Consts are the constant tables of the x8 kernels.
var (
	c3F      Mem // 32 × 0x3f
	cQ4KDup  Mem // 4 × 32: VPSHUFB making words (b, b) from plane byte 4k+r%4 (k = 0..3)
	cQ6KDupW Mem // 2 × 32: VPSHUFB making words (w0, w0), (w1, w1) from dword (w0, w1)
)

func genX8Constants() {
	c3F = bytesConst("k_3f", fill(32, 0x3f))
	var dup []byte
	for k := 0; k < 4; k++ {
		for h := 0; h < 2; h++ {
			for i := 0; i < 4; i++ {
				b := byte(4*k + i)
				dup = append(dup, b, 0x80, b, 0x80)
			}
		}
	}
	cQ4KDup = bytesConst("k_q4k_dup", dup)
	var dw []byte
	for w := 0; w < 2; w++ {
		for i := 0; i < 8; i++ {
			b := byte(4*(i%4) + 2*w)
			dw = append(dw, b, b+1, b, b+1)
		}
	}
	cQ6KDupW = bytesConst("k_q6k_dupw", dw)
}

// x8 block group sizes.
const (
	x8Q8_0 = 8 * q8_0Size
	x8Q4K  = 8 * q4kSize
	x8Q6K  = 8 * q6kSize
)

// hsumI32 reduces the eight int32 lanes of v (exact) into every lane of an
// xmm.
func hsumI32(v VecVirtual) VecVirtual {
	s := XMM()
	VEXTRACTI128(Imm(1), v, s)
	VPADDD(v.AsX(), s, s)
	t := XMM()
	VPSHUFD(Imm(0x4e), s, t)
	VPADDD(t, s, s)
	VPSHUFD(Imm(0xb1), s, t)
	VPADDD(t, s, s)
	return s
}

// hsumPairI32 returns an xmm [ΣS, ΣM, ΣS, ΣM] (int32, exact).
func hsumPairI32(S, M VecVirtual) VecVirtual {
	s, m := XMM(), XMM()
	VEXTRACTI128(Imm(1), S, s)
	VPADDD(S.AsX(), s, s)
	VEXTRACTI128(Imm(1), M, m)
	VPADDD(M.AsX(), m, m)
	VPHADDD(m, s, s)
	VPHADDD(s, s, s)
	return s
}

// ---------------------------------------------------------------------------
// One row, the file's layout.

func genDotQ8_0() {
	name := "dotQ8_0AVX2"
	TEXT(name, NOSPLIT, "func(nb int, w, a *byte) float32")
	Doc(name+" is the AVX2 twin of dotQ8_0Q8_0 over nb > 0 blocks.", "")
	nb := Load(Param("nb"), GP64())
	wp := Load(Param("w"), GP64())
	ap := Load(Param("a"), GP64())
	ones := YMM()
	VMOVDQU(cOnes16, ones)
	acc := XMM()
	VXORPS(acc, acc, acc)
	Label(name + "_loop")
	d := blockScaleScalar(Mem{Base: wp}, Mem{Base: ap})
	x, y := YMM(), YMM()
	VMOVDQU(Mem{Base: wp, Disp: 2}, x)
	VMOVDQU(Mem{Base: ap, Disp: 2}, y)
	VPSIGNB(x, y, y)
	VPABSB(x, x)
	VPMADDUBSW(y, x, x)
	VPMADDWD(ones, x, x)
	s := hsumI32(x)
	VCVTDQ2PS(s, s)
	VFMADD231SS(s, d, acc)
	ADDQ(U32(q8_0Size), wp)
	ADDQ(U32(q8_0Size), ap)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	Store(acc, ReturnIndex(0))
	RET()
}

func genDotQ4K() {
	name := "dotQ4KQ8KAVX2"
	TEXT(name, NOSPLIT, "func(nb int, w, a *byte) float32")
	Doc(name+" is the AVX2 twin of dotQ4_KQ8_K over nb > 0 blocks.", "")
	nb := Load(Param("nb"), GP64())
	wp := Load(Param("w"), GP64())
	ap := Load(Param("a"), GP64())
	w, a := Mem{Base: wp}, Mem{Base: ap}
	c := newQ4KConsts()
	acc := XMM() // [acc, accm, acc, accm]
	VXORPS(acc, acc, acc)
	Label(name + "_loop")
	sc := q4kScales(c, w)
	// D2 = [d, dmin, d, dmin] = y.d * [fp16(x.d), fp16(x.dmin), …]
	D2, yd := XMM(), XMM()
	VPBROADCASTD(w, D2)
	VCVTPH2PS(D2, D2)
	VBROADCASTSS(a, yd)
	VMULPS(yd, D2, D2)
	// M: lane j = m_j * (bsums[2j] + bsums[2j+1]).
	M := YMM()
	VPSHUFB(c.minsShuf, sc, M)
	VPMADDWD(a.Offset(260), M, M)
	S := YMM()
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
			VPADDD(lo, hi, S)
		} else {
			VPADDD(lo, S, S)
			VPADDD(hi, S, S)
		}
	}
	P := hsumPairI32(S, M)
	VCVTDQ2PS(P, P)
	VFMADD231PS(P, D2, acc)
	ADDQ(U32(q4kSize), wp)
	ADDQ(U32(q8kSize), ap)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	m := XMM()
	VMOVSHDUP(acc, m)
	VSUBSS(m, acc, acc)
	VZEROUPPER()
	Store(acc, ReturnIndex(0))
	RET()
}

func genDotQ6K() {
	name := "dotQ6KQ8KAVX2"
	TEXT(name, NOSPLIT, "func(nb int, w, a *byte) float32")
	Doc(name+" is the AVX2 twin of dotQ6_KQ8_K over nb > 0 blocks.", "")
	nb := Load(Param("nb"), GP64())
	wp := Load(Param("w"), GP64())
	ap := Load(Param("a"), GP64())
	w, a := Mem{Base: wp}, Mem{Base: ap}
	m4 := YMM()
	VMOVDQU(cM4, m4)
	acc := XMM()
	VXORPS(acc, acc, acc)
	Label(name + "_loop")
	// d = yd * fp16(x.d)
	t32 := GP32()
	MOVWLZX(w.Offset(208), t32)
	dx := XMM()
	VMOVD(t32, dx)
	VCVTPH2PS(dx, dx)
	VMULSS(a, dx, dx)
	// Scales: words sc0,sc2,…,sc14 | sc1,sc3,…,sc15 (chunk c's scale
	// vector is then a same-in-both-lanes word broadcast).
	xs := XMM()
	VMOVDQU(w.Offset(192), xs)
	VPSHUFB(cQ6KEvenOd, xs, xs)
	sc := YMM()
	VPMOVSXBW(xs, sc)
	// corr[l] = bsums[2l]*sc_{2l} + bsums[2l+1]*sc_{2l+1}, times 32.
	corr := YMM()
	VPMOVSXBW(w.Offset(192), corr)
	VPMADDWD(a.Offset(260), corr, corr)
	VPSLLD(Imm(5), corr, corr)
	sumi := YMM()
	for h := 0; h < 2; h++ {
		ql0, ql1, qh := YMM(), YMM(), YMM()
		VMOVDQU(w.Offset(64*h), ql0)
		VMOVDQU(w.Offset(64*h+32), ql1)
		VMOVDQU(w.Offset(128+32*h), qh)
		for k := 0; k < 4; k++ {
			cc := 4*h + k
			u := q6kQuants(k, ql0, ql1, qh, m4)
			t := YMM()
			VPMADDUBSW(a.Offset(4+32*cc), u, u)
			VPSHUFB(cQ6KScale.Offset(32*cc), sc, t)
			VPMADDWD(t, u, u)
			if cc == 0 {
				VPSUBD(corr, u, sumi)
			} else {
				VPADDD(u, sumi, sumi)
			}
		}
	}
	s := hsumI32(sumi)
	VCVTDQ2PS(s, s)
	VFMADD231SS(s, dx, acc)
	ADDQ(U32(q6kSize), wp)
	ADDQ(U32(q8kSize), ap)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	Store(acc, ReturnIndex(0))
	RET()
}

// ---------------------------------------------------------------------------
// x8 kernels.

// x8Tokens addresses the activations of the kernel's tokens: token t's
// current block at a + t*aStride (tokenPtrs, up to four), or one pointer.
type x8Tokens struct {
	n    int
	ptrs *tokenPtrs
}

func (x *x8Tokens) at(t, off int) Mem { return x.ptrs.at(t, off) }

// x8Kernel describes one format's x8 kernel by its pieces.
type x8Kernel struct {
	name, twin string
	bgSize     int // bytes per block group
	aSize      int // bytes per activation block
	// block emits the arithmetic of one block group for the tokens of tk,
	// updating the float accumulators (acc[t], and accm[t] when the format
	// has one) which are registers or stack slots.
	block func(w Mem, tk *x8Tokens, acc, accm []Op)
	mins  bool // the format keeps a second accumulator (result acc - accm)
}

// fmaAcc does acc = fma(d, float32(sumi), acc) where acc is a register or a
// stack slot.
func fmaAcc(d, sumi VecVirtual, acc Op) {
	VCVTDQ2PS(sumi, sumi)
	if r, ok := acc.(VecVirtual); ok {
		VFMADD231PS(sumi, d, r)
		return
	}
	VFMADD213PS(acc, d, sumi) // sumi = d*sumi + acc
	VMOVUPS(sumi, acc)
}

// scaleTimesToken returns dx * broadcast(float32 at m).
func scaleTimesToken(dx VecVirtual, m Mem) VecVirtual {
	d := YMM()
	VBROADCASTSS(m, d)
	VMULPS(dx, d, d)
	return d
}

// q8_0X8Block: one Q8_0 block group (8 rows × 32) against the tokens.
func q8_0X8Block(w Mem, tk *x8Tokens, acc, _ []Op) {
	dx := YMM()
	VCVTPH2PS(w, dx)
	s := make([]VecVirtual, tk.n)
	for q := 0; q < 8; q++ {
		x, ax := YMM(), YMM()
		VMOVDQU(w.Offset(16+32*q), x)
		VPABSB(x, ax)
		for t := 0; t < tk.n; t++ {
			b := YMM()
			VPBROADCASTD(tk.at(t, 2+4*q), b)
			VPSIGNB(x, b, b)
			VPMADDUBSW(b, ax, b)
			VPMADDWD(cOnes16, b, b)
			if q == 0 {
				s[t] = b
			} else {
				VPADDD(b, s[t], s[t])
			}
		}
	}
	for t := 0; t < tk.n; t++ {
		dy := YMM()
		VPBROADCASTW(tk.at(t, 0), dy.AsX())
		VCVTPH2PS(dy.AsX(), dy)
		VMULPS(dx, dy, dy)
		fmaAcc(dy, s[t], acc[t])
	}
}

// q4kX8Block: one Q4_K block group (8 rows × 256) against the tokens.
func q4kX8Block(w Mem, tk *x8Tokens, acc, accm []Op) {
	// Scales and mins of the eight rows: 6-bit fields unpacked as
	// ggml's get_scale_min_k4, on byte planes (x8.go).
	p0, p1, p2 := YMM(), YMM(), YMM()
	VMOVDQU(w.Offset(32), p0)
	VMOVDQU(w.Offset(64), p1)
	VMOVDQU(w.Offset(96), p2)
	sc03, sc47, m03, m47, t := YMM(), YMM(), YMM(), YMM(), YMM()
	VPAND(c3F, p0, sc03)
	VPAND(c3F, p1, m03)
	VPSRLW(Imm(2), p0, t)
	VPAND(c30, t, t)
	VPAND(cM4, p2, sc47)
	VPOR(t, sc47, sc47)
	VPSRLW(Imm(2), p1, t)
	VPAND(c30, t, t)
	VPSRLW(Imm(4), p2, m47)
	VPAND(cM4, m47, m47)
	VPOR(t, m47, m47)

	// Mins: summ_t = Σ_j m_j * (bsums[2j] + bsums[2j+1]).
	summ := make([]VecVirtual, tk.n)
	for j := 0; j < 8; j++ {
		src := m03
		if j >= 4 {
			src = m47
		}
		md := YMM()
		VPSHUFB(cQ4KDup.Offset(32*(j%4)), src, md)
		for k := 0; k < tk.n; k++ {
			b := YMM()
			VPBROADCASTD(tk.at(k, 260+4*j), b)
			VPMADDWD(md, b, b)
			if j == 0 {
				summ[k] = b
			} else {
				VPADDD(b, summ[k], summ[k])
			}
		}
	}
	dmx := YMM()
	VCVTPH2PS(w.Offset(16), dmx)
	for k := 0; k < tk.n; k++ {
		fmaAcc(scaleTimesToken(dmx, tk.at(k, 0)), summ[k], accm[k])
	}

	// Quants: per sub-block j, int16 sums of the eight VPMADDUBSW
	// products (|sum| ≤ 8·2·15·128 < 2^15), then VPMADDWD by the scale.
	sumi := make([]VecVirtual, tk.n)
	for j := 0; j < 8; j++ {
		s16 := make([]VecVirtual, tk.n)
		for q := 0; q < 4; q++ {
			lo, hi := YMM(), YMM()
			VMOVDQU(w.Offset(128+128*j+32*q), hi)
			VPAND(cM4, hi, lo)
			VPSRLW(Imm(4), hi, hi)
			VPAND(cM4, hi, hi)
			for k := 0; k < tk.n; k++ {
				for h, v := range []VecVirtual{lo, hi} {
					b := YMM()
					VPBROADCASTD(tk.at(k, 4+32*j+8*q+4*h), b)
					VPMADDUBSW(b, v, b)
					if q == 0 && h == 0 {
						s16[k] = b
					} else {
						VPADDW(b, s16[k], s16[k])
					}
				}
			}
		}
		src := sc03
		if j >= 4 {
			src = sc47
		}
		sd := YMM()
		VPSHUFB(cQ4KDup.Offset(32*(j%4)), src, sd)
		for k := 0; k < tk.n; k++ {
			VPMADDWD(sd, s16[k], s16[k])
			if j == 0 {
				sumi[k] = s16[k]
			} else {
				VPADDD(s16[k], sumi[k], sumi[k])
			}
		}
	}
	dx := YMM()
	VCVTPH2PS(w, dx)
	for k := 0; k < tk.n; k++ {
		fmaAcc(scaleTimesToken(dx, tk.at(k, 0)), sumi[k], acc[k])
	}
}

// q6kX8Block: one Q6_K block group (8 rows × 256) against the tokens.
func q6kX8Block(w Mem, tk *x8Tokens, acc, _ []Op) {
	// sumi_t starts at -32 * Σ_g sc_g * bsums[g] (the -32 offset of the
	// quants, through the activation's sums per 16).
	sumi := make([]VecVirtual, tk.n)
	for p := 0; p < 8; p++ {
		sp := YMM()
		VPMOVSXBW(w.Offset(16+16*p), sp)
		for k := 0; k < tk.n; k++ {
			b := YMM()
			VPBROADCASTD(tk.at(k, 260+4*p), b)
			VPMADDWD(sp, b, b)
			if p == 0 {
				sumi[k] = b
			} else {
				VPADDD(b, sumi[k], sumi[k])
			}
		}
	}
	for k := 0; k < tk.n; k++ {
		VPSLLD(Imm(5), sumi[k], sumi[k])
		z := YMM()
		VPXOR(z, z, z)
		VPSUBD(sumi[k], z, sumi[k])
	}
	var sd [2]VecVirtual
	for g := 0; g < 16; g++ {
		if g%2 == 0 {
			sp := YMM()
			VPMOVSXBW(w.Offset(16+16*(g/2)), sp)
			sd = [2]VecVirtual{YMM(), YMM()}
			VPSHUFB(cQ6KDupW, sp, sd[0])
			VPSHUFB(cQ6KDupW.Offset(32), sp, sd[1])
		}
		base := 144 + 96*g
		A, B, H := YMM(), YMM(), YMM()
		VMOVDQU(w.Offset(base), A)
		VMOVDQU(w.Offset(base+32), B)
		VMOVDQU(w.Offset(base+64), H)
		u := [4]VecVirtual{YMM(), YMM(), YMM(), YMM()}
		t := YMM()
		// u0 = A&15 | (H&3)<<4
		VPAND(cM4, A, u[0])
		VPSLLW(Imm(4), H, t)
		VPAND(c30, t, t)
		VPOR(t, u[0], u[0])
		// u1 = A>>4 | (H>>2&3)<<4
		VPSRLW(Imm(4), A, u[1])
		VPAND(cM4, u[1], u[1])
		VPSLLW(Imm(2), H, t)
		VPAND(c30, t, t)
		VPOR(t, u[1], u[1])
		// u2 = B&15 | (H>>4&3)<<4
		VPAND(cM4, B, u[2])
		VPAND(c30, H, t)
		VPOR(t, u[2], u[2])
		// u3 = B>>4 | (H>>6)<<4
		VPSRLW(Imm(4), B, u[3])
		VPAND(cM4, u[3], u[3])
		VPSRLW(Imm(2), H, t)
		VPAND(c30, t, t)
		VPOR(t, u[3], u[3])
		for k := 0; k < tk.n; k++ {
			// Pairs of products fit int16: 2·2·63·128 < 2^15.
			var pr [2]VecVirtual
			for i := 0; i < 2; i++ {
				b0, b1 := YMM(), YMM()
				VPBROADCASTD(tk.at(k, 4+16*g+8*i), b0)
				VPMADDUBSW(b0, u[2*i], b0)
				VPBROADCASTD(tk.at(k, 4+16*g+8*i+4), b1)
				VPMADDUBSW(b1, u[2*i+1], b1)
				VPADDW(b1, b0, b0)
				VPMADDWD(sd[g%2], b0, b0)
				pr[i] = b0
			}
			VPADDD(pr[0], sumi[k], sumi[k])
			VPADDD(pr[1], sumi[k], sumi[k])
		}
	}
	dx := YMM()
	VCVTPH2PS(w.Offset(0), dx)
	for k := 0; k < tk.n; k++ {
		fmaAcc(scaleTimesToken(dx, tk.at(k, 0)), sumi[k], acc[k])
	}
}

var x8Kernels = []x8Kernel{
	{name: "Q8_0", twin: "dotQ8_0Q8_0", bgSize: x8Q8_0, aSize: q8_0Size, block: q8_0X8Block},
	{name: "Q4K", twin: "dotQ4_KQ8_K", bgSize: x8Q4K, aSize: q8kSize, block: q4kX8Block, mins: true},
	{name: "Q6K", twin: "dotQ6_KQ8_K", bgSize: x8Q6K, aSize: q8kSize, block: q6kX8Block},
}

// genX8Tokens: nGroups row groups × nChunks chunks of n tokens, group by
// group (a group's weights stay in L1 while every chunk passes over it);
// accumulators on the stack.
func genX8Tokens(k x8Kernel, n int) {
	name := fmt.Sprintf("x8%sTok%dAVX2", k.name, n)
	TEXT(name, NOSPLIT, "func(nb int, w *byte, nGroups int, a *byte, aStride int, nChunks int, out *float32, outStride int)")
	Doc(fmt.Sprintf("%s sets out[t*outStride + 8g + r] = %s(row r of group g, token t)", name, k.twin),
		fmt.Sprintf("for nGroups > 0 consecutive x8 row groups at w and nChunks > 0 chunks of %d tokens,", n),
		"token t's activation at a + t*aStride; nb > 0 block groups per row group.")
	wg := Load(Param("w"), GP64())
	outg := Load(Param("out"), GP64())
	os := Load(Param("outStride"), GP64())
	SHLQ(U8(2), os)
	nacc := n
	if k.mins {
		nacc = 2 * n
	}
	local := AllocLocal(32*nacc + 16) // accumulators, chunk counter, chunk output pointer
	chunks, outc := local.Offset(32*nacc), local.Offset(32*nacc+8)
	acc, accm := make([]Op, n), make([]Op, n)
	for t := 0; t < n; t++ {
		acc[t] = local.Offset(32 * t)
		if k.mins {
			accm[t] = local.Offset(32 * (n + t))
		}
	}
	Label(name + "_group")
	tk := &x8Tokens{n: n, ptrs: newTokenPtrs()} // base = a: the first chunk
	cnt := Load(Param("nChunks"), GP64())
	MOVQ(cnt, chunks)
	MOVQ(outg, outc)
	Label(name + "_chunk")
	z := YMM()
	VXORPS(z, z, z)
	for i := 0; i < nacc; i++ {
		VMOVUPS(z, local.Offset(32*i))
	}
	wp := GP64()
	MOVQ(wg, wp)
	ap := GP64()
	MOVQ(tk.ptrs.base, ap)
	nb := Load(Param("nb"), GP64())
	Label(name + "_loop")
	k.block(Mem{Base: wp}, tk, acc, accm)
	ADDQ(U32(k.bgSize), wp)
	ADDQ(U32(k.aSize), tk.ptrs.base)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	// Store the chunk's n × 8 results.
	out := GP64()
	MOVQ(outc, out)
	for t := 0; t < n; t++ {
		v := YMM()
		VMOVUPS(local.Offset(32*t), v)
		if k.mins {
			VSUBPS(local.Offset(32*(n+t)), v, v)
		}
		VMOVUPS(v, Mem{Base: out})
		ADDQ(os, out)
	}
	MOVQ(out, outc) // the next chunk's outputs follow
	// The next chunk's activations: n tokens on.
	MOVQ(ap, tk.ptrs.base)
	for t := 0; t < n; t++ {
		ADDQ(tk.ptrs.s1, tk.ptrs.base)
	}
	DECQ(chunks)
	JNZ(LabelRef(name + "_chunk"))
	MOVQ(wp, wg) // the next group's weights follow
	ADDQ(U8(32), outg)
	DECQ(paramMem("nGroups"))
	JNZ(LabelRef(name + "_group"))
	VZEROUPPER()
	RET()
}

// x8PrefetchDist is how far ahead (bytes) the decode kernels prefetch
// weights with PREFETCHT0; 0 emits no prefetch. The x8 layout streams each
// matrix strictly sequentially, and on this project's machine kind
// software prefetch at 1, 2, 4 or 6 KiB only slowed decoding (1.1B model,
// one thread: Q6_K 25 → 31 tokens/s, Q4_K_M 37 → 43 without it, weights on
// 2 MiB pages; no worse on 4 KiB pages), so none is emitted.
var x8PrefetchDist = 0

// genX8Rows: nGroups row groups × one token, accumulators in registers.
func genX8Rows(k x8Kernel) {
	name := fmt.Sprintf("x8%sRowsAVX2", k.name)
	TEXT(name, NOSPLIT, "func(nb int, w *byte, nGroups int, a *byte, out *float32)")
	Doc(fmt.Sprintf("%s sets out[8g + r] = %s(row r of group g, a) for", name, k.twin),
		"nGroups > 0 consecutive x8 row groups at w, nb > 0 block groups each.")
	wp := Load(Param("w"), GP64())
	out := Load(Param("out"), GP64())
	Label(name + "_group")
	ap := Load(Param("a"), GP64())
	tk := &x8Tokens{n: 1, ptrs: &tokenPtrs{base: ap}}
	nb := Load(Param("nb"), GP64())
	acc, accm := YMM(), YMM()
	VXORPS(acc, acc, acc)
	if k.mins {
		VXORPS(accm, accm, accm)
	}
	Label(name + "_loop")
	if x8PrefetchDist > 0 {
		for off := 0; off < k.bgSize; off += 64 {
			PREFETCHT0(Mem{Base: wp, Disp: x8PrefetchDist + off})
		}
	}
	k.block(Mem{Base: wp}, tk, []Op{acc}, []Op{accm})
	ADDQ(U32(k.bgSize), wp)
	ADDQ(U32(k.aSize), ap)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	if k.mins {
		VSUBPS(accm, acc, acc)
	}
	VMOVUPS(acc, Mem{Base: out})
	ADDQ(U8(32), out)
	DECQ(paramMem("nGroups"))
	JNZ(LabelRef(name + "_group"))
	VZEROUPPER()
	RET()
}

func genX8() {
	genDotQ8_0()
	genDotQ4K()
	genDotQ6K()
	for _, k := range x8Kernels {
		genX8Rows(k)
		for n := 1; n <= 4; n++ {
			genX8Tokens(k, n)
		}
	}
}

// genFMATest: a single VFMADD231SS, for the test pinning kernels.fma32 to
// the hardware.
func genFMATest() {
	TEXT("fmaAVX2", NOSPLIT, "func(a, b, c float32) float32")
	Doc("fmaAVX2 returns a*b+c rounded once (VFMADD231SS): the hardware that kernels.fma32 reproduces.")
	a := Load(Param("a"), XMM())
	b := Load(Param("b"), XMM())
	c := Load(Param("c"), XMM())
	VFMADD231SS(b, a, c)
	Store(c, ReturnIndex(0))
	RET()
}

// ---------------------------------------------------------------------------
// Element-wise kernels with ggml's vectorised expf (kernels.expVec).

var cExp struct {
	r, c0, ln1, ln2, p0, p1, p2, p3, p4, one, c126, c192, absMask Mem
	i7f, i82, tailMask, negInf                                    Mem
}

func genExpConstants() {
	f := func(name string, v uint32) Mem { return bytesConst(name, rep32(8, v)) }
	cExp.r = f("k_exp_r", 0x4b400000)     // 0x1.8p23
	cExp.c0 = f("k_exp_c0", 0x3fb8aa3b)   // 0x1.715476p+0
	cExp.ln1 = f("k_exp_ln1", 0x3f317200) // 0x1.62e4p-1
	cExp.ln2 = f("k_exp_ln2", 0x35bfbe8e) // 0x1.7f7d1cp-20
	cExp.p0 = f("k_exp_p0", 0x3c072010)   // 0x1.0e4020p-7
	cExp.p1 = f("k_exp_p1", 0x3d2b9f17)   // 0x1.573e2ep-5
	cExp.p2 = f("k_exp_p2", 0x3e2aaf33)   // 0x1.555e66p-3
	cExp.p3 = f("k_exp_p3", 0x3efffedb)   // 0x1.fffdb6p-2
	cExp.p4 = f("k_exp_p4", 0x3f7ffff6)   // 0x1.ffffecp-1
	cExp.one = f("k_exp_one", 0x3f800000)
	cExp.c126 = f("k_exp_126", 0x42fc0000)
	cExp.c192 = f("k_exp_192", 0x43400000)
	cExp.i7f = f("k_exp_7f", 0x7f000000)
	cExp.i82 = f("k_exp_82", 0x82000000)
	cExp.tailMask = bytesConst("k_tailmask", append(rep32(8, 0xffffffff), rep32(8, 0)...))
	cExp.negInf = f("k_neginf", 0xff800000)
}

// expPS returns ggml_v_expf(x) for the eight lanes of x (kernels.expVec,
// lane by lane: the three cases are computed and selected per lane).
func expPS(x VecVirtual) VecVirtual {
	z, n, b, t := YMM(), YMM(), YMM(), YMM()
	VMOVUPS(cExp.r, z)
	VFMADD231PS(cExp.c0, x, z) // z = x*c0 + r
	VSUBPS(cExp.r, z, n)       // n = z - r
	VMOVAPS(x, t)
	VFNMADD231PS(cExp.ln1, n, t) // t = x - n*ln1
	VMOVAPS(t, b)
	VFNMADD231PS(cExp.ln2, n, b) // b = t - n*ln2
	e := YMM()
	VPSLLD(Imm(23), z, e)
	k := YMM()
	VPADDD(cExp.one, e, k)
	u := YMM()
	VMULPS(b, b, u)
	// j = fma(fma(fma(p0, b, p1), u, fma(p2, b, p3)), u, p4*b)
	j1, j2, j := YMM(), YMM(), YMM()
	VMOVUPS(cExp.p1, j1)
	VFMADD231PS(cExp.p0, b, j1) // p0*b + p1
	VMOVUPS(cExp.p3, j2)
	VFMADD231PS(cExp.p2, b, j2) // p2*b + p3
	VFMADD231PS(u, j1, j2)      // j1*u + j2
	VMULPS(cExp.p4, b, j)
	VFMADD231PS(u, j2, j) // j2*u + p4*b
	// |n| > 126 (c), |n| > 192 (d)
	an := YMM()
	VPSLLD(Imm(1), n, an)
	VPSRLD(Imm(1), an, an)
	c, d := YMM(), YMM()
	VCMPPS(Imm(0x1e), cExp.c126, an, c) // GT_OQ
	VCMPPS(Imm(0x1e), cExp.c192, an, d)
	// g = n <= 0 ? 0x82000000 : 0; s1 = g + 0x7f000000; s2 = e - g
	g := YMM()
	VXORPS(g, g, g)
	VCMPPS(Imm(0x12), g, n, g) // LE_OQ: n <= 0
	VANDPS(cExp.i82, g, g)
	s1, s2 := YMM(), YMM()
	VPADDD(cExp.i7f, g, s1)
	VPSUBD(g, e, s2)
	// The three cases without computing any but the selected one's
	// products in a lane (an unselected product could underflow, and
	// underflow is slow): where |n| ≤ 126, s2 := k and s1 := 1 turn the
	// scaled case's (s2*j + s2)*s1 into exactly k*j + k.
	one := YMM()
	VMOVUPS(cExp.one, one)
	s1c, s2c := YMM(), YMM()
	VBLENDVPS(c, s1, one, s1c) // c ? s1 : 1
	VBLENDVPS(c, s2, k, s2c)   // c ? s2 : k
	r1 := YMM()
	VMOVAPS(s2c, r1)
	VFMADD231PS(j, s2c, r1)
	VMULPS(s1c, r1, r1)
	s1d := YMM()
	VBLENDVPS(d, s1, one, s1d) // d ? s1 : 1
	VMULPS(s1d, s1d, s1d)
	VBLENDVPS(d, s1d, r1, r1) // d ? s1*s1 : r1
	return r1
}

func genSwiGLU() {
	name := "swigluAVX2"
	TEXT(name, NOSPLIT, "func(n8 int, out, gate, up *float32)")
	Doc(name+" sets out[i] = gate[i]/(1+expVec(0-gate[i]))*up[i] for i < 8*n8 (kernels.SwiGLU's vector part).",
		"out may alias gate or up.")
	n := Load(Param("n8"), GP64())
	op := Load(Param("out"), GP64())
	gp := Load(Param("gate"), GP64())
	upp := Load(Param("up"), GP64())
	// Two vectors per iteration: the exponential is a long dependency
	// chain, and two independent ones fill the pipelines.
	n2 := GP64()
	MOVQ(n, n2)
	SHRQ(U8(1), n2)
	JZ(LabelRef(name + "_one"))
	Label(name + "_loop2")
	swigluVec(Mem{Base: op}, Mem{Base: gp}, Mem{Base: upp}, 2)
	ADDQ(U8(64), op)
	ADDQ(U8(64), gp)
	ADDQ(U8(64), upp)
	DECQ(n2)
	JNZ(LabelRef(name + "_loop2"))
	Label(name + "_one")
	ANDQ(U8(1), n)
	JZ(LabelRef(name + "_done"))
	swigluVec(Mem{Base: op}, Mem{Base: gp}, Mem{Base: upp}, 1)
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// swigluVec computes k consecutive vectors of SwiGLU.
func swigluVec(out, gate, up Mem, k int) {
	xs := make([]VecVirtual, k)
	es := make([]VecVirtual, k)
	for i := 0; i < k; i++ {
		x, neg := YMM(), YMM()
		VMOVUPS(gate.Offset(32*i), x)
		VXORPS(neg, neg, neg)
		VSUBPS(x, neg, neg) // 0 - x
		xs[i] = x
		es[i] = expPS(neg)
	}
	for i := 0; i < k; i++ {
		VADDPS(cExp.one, es[i], es[i])
		VDIVPS(es[i], xs[i], xs[i])
		VMULPS(up.Offset(32*i), xs[i], xs[i])
		VMOVUPS(xs[i], out.Offset(32*i))
	}
}

func genExpSub() {
	name := "expSubAVX2"
	TEXT(name, NOSPLIT, "func(n8 int, x *float32, m float32, tail int) float64")
	Doc(name+" sets x[i] = expVec(x[i]-m) for i < 8*n8+tail (tail < 8) and returns the",
		"float64 sum, in group order, of each group of 8's float32 sum in kernels.hsum8's order,",
		"a partial last group padded with -Inf (which gives exactly 0): kernels.Softmax's",
		"exponentials.")
	n := Load(Param("n8"), GP64())
	xp := Load(Param("x"), GP64())
	mv := YMM()
	VBROADCASTSS(paramMem("m"), mv)
	total := XMM()
	VXORPD(total, total, total)
	TESTQ(n, n)
	JZ(LabelRef(name + "_tail"))
	Label(name + "_loop")
	v := YMM()
	VMOVUPS(Mem{Base: xp}, v)
	VSUBPS(mv, v, v)
	e := expPS(v)
	VMOVUPS(e, Mem{Base: xp})
	s := hsum8(e)
	VCVTSS2SD(s, s, s)
	VADDSD(s, total, total)
	ADDQ(U8(32), xp)
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_tail")
	k := Load(Param("tail"), GP64())
	TESTQ(k, k)
	JZ(LabelRef(name + "_done"))
	// mask: lanes < k, read from k_tailmask (8 × -1 then 8 × 0) at 32-4k.
	tb := GP64()
	LEAQ(cExp.tailMask, tb)
	SHLQ(U8(2), k)
	NEGQ(k)
	ADDQ(U8(32), k)
	mask := YMM()
	VMOVDQU(Mem{Base: tb, Index: k, Scale: 1}, mask)
	t := YMM()
	VMASKMOVPS(Mem{Base: xp}, mask, t)
	VSUBPS(mv, t, t)
	ninf := YMM()
	VMOVUPS(cExp.negInf, ninf)
	VBLENDVPS(mask, t, ninf, t) // padding: -Inf, whose exponential is +0
	et := expPS(t)
	VMASKMOVPS(et, mask, Mem{Base: xp})
	st := hsum8(et)
	VCVTSS2SD(st, st, st)
	VADDSD(st, total, total)
	Label(name + "_done")
	VZEROUPPER()
	Store(total, ReturnIndex(0))
	RET()
}

// genPause: n PAUSE instructions, for the worker pool's spin-waits (a
// spinning thread then leaves the core's resources to a sibling thread and
// saves power).
func genPause() {
	TEXT("cpuPause", NOSPLIT, "func(n int)")
	Doc("cpuPause executes n > 0 PAUSE instructions.")
	n := Load(Param("n"), GP64())
	Label("cpuPause_loop")
	PAUSE()
	DECQ(n)
	JNZ(LabelRef("cpuPause_loop"))
	RET()
}
