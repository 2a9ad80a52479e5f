package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// q6kQuants returns the 6-bit quants of chunk k (0..3) of a half whose
// ql/qh vectors are given.
func q6kQuants(k int, ql0, ql1, qh, m4 VecVirtual) VecVirtual {
	u, t := YMM(), YMM()
	switch k {
	case 0: // ql0 & 15 | (qh&3)<<4
		VPAND(m4, ql0, u)
		VPAND(c03, qh, t)
		VPSLLW(Imm(4), t, t)
	case 1: // ql1 & 15 | (qh&0x0c)<<2
		VPAND(m4, ql1, u)
		VPAND(c0C, qh, t)
		VPSLLW(Imm(2), t, t)
	case 2: // ql0>>4 | qh&0x30
		VPSRLW(Imm(4), ql0, u)
		VPAND(m4, u, u)
		VPAND(c30, qh, t)
	case 3: // ql1>>4 | (qh&0xc0)>>2
		VPSRLW(Imm(4), ql1, u)
		VPAND(m4, u, u)
		VPAND(cC0, qh, t)
		VPSRLW(Imm(2), t, t)
	}
	VPOR(t, u, u)
	return u
}
