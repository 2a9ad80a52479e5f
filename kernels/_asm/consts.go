package main

import (
	"encoding/binary"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
)

// Read-only tables shared by the kernels.
var (
	cM4        Mem // 32 × 0x0f
	cQ4KScale  Mem // 8 × 32 bytes: word-broadcast of byte j (sub-block scale j)
	cQ4KMins   Mem // 32 bytes: words m0,m0,m1,m1,…,m7,m7 from bytes 8..15
	cQ6KEvenOd Mem // 16 bytes: even bytes then odd bytes
	cQ6KScale  Mem // 8 × 32 bytes: word-broadcast of word c
	cOnes16    Mem // 16 × int16(1)
	c16s       Mem // 32 × 0x10
	cBitsShuf  Mem // bytes_from_bits: byte e ← byte e/8
	cBitsMask  Mem // bytes_from_bits: byte e = ^(1 << e%8)
	c03        Mem // 32 × 0x03
	c0C        Mem // 32 × 0x0c
	c30        Mem // 32 × 0x30
	cC0        Mem // 32 × 0xc0
	cAbsMask   Mem // 8 × 0x7fffffff
	cMagic     Mem // 8 × 1.5·2^23 (float32 0x4b400000)
	cLowMant   Mem // 8 × 0x007fffff
	cMant4     Mem // 8 × 0x00400000
	c127d      Mem // 8 × int32(127)
	cFF        Mem // 8 × int32(0xff)
	cPerm      Mem // 8 × int32: 0,4,1,5,2,6,3,7 (VPERMD after two packs)
	cHalf      Mem // 8 × float32(0.5)
	cNegHalf   Mem // 8 × float32(-0.5)
	c127f      Mem // 8 × float32(127)
	cQNaN      Mem // 8 × 0x7fc00000
	cSign      Mem // 8 × 0x80000000
	cOnes8     Mem // 32 × 0x01
	cPermBcast Mem // 4 × 32 bytes: VPERMPS indexes broadcasting lane t
)

func bytesConst(name string, b []byte) Mem {
	if len(b)%8 != 0 {
		panic(name + ": size not a multiple of 8")
	}
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < len(b); i += 8 {
		DATA(i, U64(binary.LittleEndian.Uint64(b[i:])))
	}
	return m
}

func fill(n int, v byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = v
	}
	return b
}

func u32s(vs ...uint32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	return b
}

func rep32(n int, v uint32) []byte {
	vs := make([]uint32, n)
	for i := range vs {
		vs[i] = v
	}
	return u32s(vs...)
}

func genConstants() {
	cM4 = bytesConst("k_m4", fill(32, 0x0f))

	// The decoded Q4_K scales are bytes sc0..3 m0..3 sc4..7 m4..7.
	scPos := func(j int) byte { return byte(j + 4*(j/4)) }
	mPos := func(j int) byte { return scPos(j) + 4 }
	var q4kScale []byte
	for j := 0; j < 8; j++ {
		for k := 0; k < 16; k++ {
			q4kScale = append(q4kScale, scPos(j), 0x80)
		}
	}
	cQ4KScale = bytesConst("k_q4k_scale", q4kScale)

	var mins []byte
	for j := 0; j < 8; j++ {
		mins = append(mins, mPos(j), 0x80, mPos(j), 0x80)
	}
	cQ4KMins = bytesConst("k_q4k_mins", mins)

	var evenOdd []byte
	for k := 0; k < 16; k += 2 {
		evenOdd = append(evenOdd, byte(k))
	}
	for k := 1; k < 16; k += 2 {
		evenOdd = append(evenOdd, byte(k))
	}
	cQ6KEvenOd = bytesConst("k_q6k_evenodd", evenOdd)

	var q6kScale []byte
	for c := 0; c < 8; c++ {
		for k := 0; k < 16; k++ {
			q6kScale = append(q6kScale, byte(2*c), byte(2*c+1))
		}
	}
	cQ6KScale = bytesConst("k_q6k_scale", q6kScale)

	var ones16 []byte
	for k := 0; k < 16; k++ {
		ones16 = append(ones16, 1, 0)
	}
	cOnes16 = bytesConst("k_ones16", ones16)
	c16s = bytesConst("k_16s", fill(32, 0x10))
	cOnes8 = bytesConst("k_ones8", fill(32, 0x01))

	var bitsShuf []byte
	for e := 0; e < 32; e++ {
		bitsShuf = append(bitsShuf, byte(e/8))
	}
	cBitsShuf = bytesConst("k_bits_shuf", bitsShuf)
	var bitsMask []byte
	for e := 0; e < 32; e++ {
		bitsMask = append(bitsMask, ^byte(1<<(e%8)))
	}
	cBitsMask = bytesConst("k_bits_mask", bitsMask)

	c03 = bytesConst("k_03", fill(32, 0x03))
	c0C = bytesConst("k_0c", fill(32, 0x0c))
	c30 = bytesConst("k_30", fill(32, 0x30))
	cC0 = bytesConst("k_c0", fill(32, 0xc0))

	cAbsMask = bytesConst("k_abs", rep32(8, 0x7fffffff))
	cMagic = bytesConst("k_magic", rep32(8, 0x4b400000))
	cLowMant = bytesConst("k_low_mant", rep32(8, 0x007fffff))
	cMant4 = bytesConst("k_mant4", rep32(8, 0x00400000))
	c127d = bytesConst("k_127d", rep32(8, 127))
	cFF = bytesConst("k_ffd", rep32(8, 0xff))
	cPerm = bytesConst("k_perm", u32s(0, 4, 1, 5, 2, 6, 3, 7))
	cHalf = bytesConst("k_half", rep32(8, 0x3f000000))
	cNegHalf = bytesConst("k_neghalf", rep32(8, 0xbf000000))
	c127f = bytesConst("k_127f", rep32(8, 0x42fe0000))
	cQNaN = bytesConst("k_qnan", rep32(8, 0x7fc00000))
	cSign = bytesConst("k_sign", rep32(8, 0x80000000))
	var pb []byte
	for t := 0; t < 4; t++ {
		pb = append(pb, rep32(8, uint32(t))...)
	}
	cPermBcast = bytesConst("k_perm_bcast", pb)
}
