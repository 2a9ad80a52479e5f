package kernels

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// The x8 layout: weight rows interleaved in groups of eight.
//
// A matrix in LayoutX8 stores its rows in groups of 8 (rows 8g..8g+7), and
// within a group block by block: the "block group" b holds block b of each
// of the eight rows, rearranged so that one 32-byte vector carries a few
// consecutive quants of every row, each row in its own 32-bit lane. A
// kernel then multiplies eight rows at once by one broadcast activation
// word, keeps the eight rows' sums in the eight lanes of a register, and
// converts scales of eight rows with one instruction: no horizontal sums,
// no per-row scale shuffles. This is the idea of llama.cpp's repacked CPU
// formats (q4_K_8x8, q8_0_4x8), with a byte order of our own.
//
// The layout is a permutation of the file's bytes: a block group is exactly
// as large as the eight blocks it holds, the matrix as large as in the
// file. Rows past the last whole group (Rows%8 of them) follow the groups
// in the file's row layout. A model repacks its matrices once, at load
// (RepackX8), when its execution plan says so (plan field weights.layout).
//
// The arithmetic is the type's dot product, unchanged: the x8 kernels
// compute, for each row, exactly dotQ8_0Q8_0 / dotQ4_KQ8_K / dotQ6_KQ8_K
// of the row's original bytes (their doc comments give the order). The
// pure-Go x8 tiles below make that literal (they unpack and call the dot);
// the assembly ones are pinned to them.
//
// Block group byte maps (r = row in the group 0..7, m = 0..3):
//
//	Q8_0, 272 bytes (8×34):
//	  [2r:2r+2]            d of row r (binary16)
//	  [16+32q+4r+m]        qs_r[4q+m], q = 0..7
//
//	Q4_K, 1152 bytes (8×144), v_r(e) the 4-bit quant of element e:
//	  [2r:2r+2]            d of row r;   [16+2r:18+2r] dmin of row r
//	  [32+32c+16(r/4)+4k+r%4]  packed scale byte 4c+k of row r (c = 0..2, k = 0..3)
//	  [128+128j+32q+4r+m]  v_r(32j+8q+m) | v_r(32j+8q+4+m)<<4   (sub-block j, q = 0..3)
//
//	Q6_K, 1680 bytes (8×210), u_r(e) the 6-bit quant of element e:
//	  [2r:2r+2]            d of row r
//	  [16+16p+2r+i]        scale 2p+i of row r (int8), p = 0..7, i = 0..1
//	  for sub-block g = 0..15, at 144+96g:
//	  [+4r+m]              u_r(16g+m)&15   | (u_r(16g+4+m)&15)<<4
//	  [+32+4r+m]           u_r(16g+8+m)&15 | (u_r(16g+12+m)&15)<<4
//	  [+64+4r+m]           u_r(16g+m)>>4 | (u_r(16g+4+m)>>4)<<2 | (u_r(16g+8+m)>>4)<<4 | (u_r(16g+12+m)>>4)<<6

// Layout is how a Matrix's rows are arranged in its Data.
type Layout uint8

const (
	// LayoutRows is the file's layout: row after row.
	LayoutRows Layout = iota
	// LayoutX8 interleaves groups of 8 rows block by block (see x8.go).
	LayoutX8
)

func (l Layout) String() string {
	switch l {
	case LayoutRows:
		return "rows"
	case LayoutX8:
		return "x8"
	}
	return fmt.Sprintf("layout(%d)", uint8(l))
}

// X8Types are the weight types that have an x8 layout.
var X8Types = []Type{Q8_0, Q4_K, Q6_K}

// HasX8 reports whether weights of type t can be repacked to LayoutX8.
func HasX8(t Type) bool { return t == Q8_0 || t == Q4_K || t == Q6_K }

// RepackX8 returns the matrix m in LayoutX8, its data written to dst (which
// must hold len(m.Data) bytes and must not overlap it). Groups are written
// independently, so callers may split the work by row groups (RepackX8Rows).
func RepackX8(dst []byte, m *Matrix) (*Matrix, error) {
	if err := checkRepack(dst, m); err != nil {
		return nil, err
	}
	RepackX8Rows(dst, m, 0, m.Rows/8)
	rb := m.RowBytes()
	g := m.Rows / 8
	copy(dst[g*8*rb:], m.Data[g*8*rb:])
	return &Matrix{Type: m.Type, Rows: m.Rows, Cols: m.Cols, Data: dst[:len(m.Data):len(m.Data)], Layout: LayoutX8}, nil
}

func checkRepack(dst []byte, m *Matrix) error {
	if m.Layout != LayoutRows {
		return fmt.Errorf("kernels: repack: matrix is already in layout %s", m.Layout)
	}
	if !HasX8(m.Type) {
		return fmt.Errorf("kernels: repack: %s has no x8 layout", m.Type)
	}
	if len(dst) < len(m.Data) {
		return fmt.Errorf("kernels: repack: destination holds %d bytes, need %d", len(dst), len(m.Data))
	}
	return nil
}

// RepackX8Rows writes row groups [g0, g1) of m (in LayoutRows) into dst in
// LayoutX8 (dst laid out as RepackX8's). Tail rows are RepackX8's to copy.
func RepackX8Rows(dst []byte, m *Matrix, g0, g1 int) {
	rb := m.RowBytes()
	ts := m.Type.TypeSize()
	nb := m.Cols / m.Type.BlockSize()
	bg := 8 * ts
	var rows [8][]byte
	for g := g0; g < g1; g++ {
		for r := range rows {
			rows[r] = m.Data[(8*g+r)*rb:]
		}
		for b := 0; b < nb; b++ {
			out := dst[(g*nb+b)*bg : (g*nb+b+1)*bg]
			var blocks [8][]byte
			for r := range blocks {
				blocks[r] = rows[r][b*ts : (b+1)*ts]
			}
			packX8(m.Type, out, &blocks)
		}
	}
}

// UnpackX8Row writes row r of the x8 matrix m, in the file's row layout,
// into dst (m.RowBytes() bytes).
func UnpackX8Row(dst []byte, m *Matrix, r int) {
	rb := m.RowBytes()
	g := m.Rows / 8
	if r >= 8*g {
		copy(dst[:rb], m.Data[r*rb:(r+1)*rb])
		return
	}
	ts := m.Type.TypeSize()
	nb := m.Cols / m.Type.BlockSize()
	bg := 8 * ts
	base := (r / 8) * nb * bg
	for b := 0; b < nb; b++ {
		unpackX8(m.Type, dst[b*ts:(b+1)*ts], m.Data[base+b*bg:base+(b+1)*bg], r%8)
	}
}

// packX8 writes one block group from the eight rows' blocks.
func packX8(t Type, out []byte, in *[8][]byte) {
	switch t {
	case Q8_0:
		for r, x := range in {
			out[2*r], out[2*r+1] = x[0], x[1]
			for q := 0; q < 8; q++ {
				copy(out[16+32*q+4*r:16+32*q+4*r+4], x[2+4*q:2+4*q+4])
			}
		}
	case Q4_K:
		for r, x := range in {
			out[2*r], out[2*r+1] = x[0], x[1]
			out[16+2*r], out[16+2*r+1] = x[2], x[3]
			for c := 0; c < 3; c++ {
				for k := 0; k < 4; k++ {
					out[32+32*c+16*(r/4)+4*k+r%4] = x[4+4*c+k]
				}
			}
			// Four output bytes at a time: the low (or high) nibbles of
			// qs[8q..8q+3] and qs[8q+4..8q+7] interleaved by nibble.
			for j := 0; j < 8; j++ {
				qs := (*[32]byte)(x[16+32*(j/2):])
				sh := 4 * uint(j%2)
				o := out[128+128*j+4*r:]
				for q := 0; q < 4; q++ {
					lo := binary.LittleEndian.Uint32(qs[8*q:]) >> sh & 0x0f0f0f0f
					hi := binary.LittleEndian.Uint32(qs[8*q+4:]) >> sh & 0x0f0f0f0f
					binary.LittleEndian.PutUint32(o[32*q:], lo|hi<<4)
				}
			}
		}
	case Q6_K:
		for r, x := range in {
			out[2*r], out[2*r+1] = x[208], x[209]
			for p := 0; p < 8; p++ {
				out[16+16*p+2*r] = x[192+2*p]
				out[16+16*p+2*r+1] = x[192+2*p+1]
			}
			// Sub-block g's sixteen quants lie in one quarter of a
			// half (l = 16g - 128h): low nibbles from ql (high nibbles
			// in quarters 2 and 3), top bits from qh at bit 2·quarter;
			// four bytes of each at a time.
			for g := 0; g < 16; g++ {
				h := g / 8
				l := 16*g - 128*h
				qd, li := uint(l/32), l%32
				ql := (*[64]byte)(x[64*h:])
				qh := (*[32]byte)(x[128+32*h:])
				qlOff := 32 * int(qd%2)
				nib := 4 * (qd / 2)
				lo := func(i int) uint32 {
					return binary.LittleEndian.Uint32(ql[qlOff+li+i:]) >> nib & 0x0f0f0f0f
				}
				hi := func(i int) uint32 {
					return binary.LittleEndian.Uint32(qh[li+i:]) >> (2 * qd) & 0x03030303
				}
				base := 144 + 96*g + 4*r
				binary.LittleEndian.PutUint32(out[base:], lo(0)|lo(4)<<4)
				binary.LittleEndian.PutUint32(out[base+32:], lo(8)|lo(12)<<4)
				binary.LittleEndian.PutUint32(out[base+64:], hi(0)|hi(4)<<2|hi(8)<<4|hi(12)<<6)
			}
		}
	default:
		panic("kernels: packX8: " + t.String())
	}
}

// unpackX8 writes row r's block of the block group in back into out.
func unpackX8(t Type, out, in []byte, r int) {
	switch t {
	case Q8_0:
		out[0], out[1] = in[2*r], in[2*r+1]
		for q := 0; q < 8; q++ {
			copy(out[2+4*q:2+4*q+4], in[16+32*q+4*r:16+32*q+4*r+4])
		}
	case Q4_K:
		out[0], out[1] = in[2*r], in[2*r+1]
		out[2], out[3] = in[16+2*r], in[16+2*r+1]
		for c := 0; c < 3; c++ {
			for k := 0; k < 4; k++ {
				out[4+4*c+k] = in[32+32*c+16*(r/4)+4*k+r%4]
			}
		}
		clear(out[16:144])
		for j := 0; j < 8; j++ {
			for q := 0; q < 4; q++ {
				for m := 0; m < 4; m++ {
					b := in[128+128*j+32*q+4*r+m]
					for h, e := range [2]int{32*j + 8*q + m, 32*j + 8*q + 4 + m} {
						v := b >> (4 * uint(h)) & 0xf
						out[16+32*(e/64)+e%32] |= v << (4 * uint(e/32%2))
					}
				}
			}
		}
	case Q6_K:
		out[208], out[209] = in[2*r], in[2*r+1]
		for p := 0; p < 8; p++ {
			out[192+2*p] = in[16+16*p+2*r]
			out[192+2*p+1] = in[16+16*p+2*r+1]
		}
		var u [QK_K]uint8
		for g := 0; g < 16; g++ {
			base := 144 + 96*g
			for m := 0; m < 4; m++ {
				e := 16*g + m
				a, b, h := in[base+4*r+m], in[base+32+4*r+m], in[base+64+4*r+m]
				u[e] = a&15 | (h&3)<<4
				u[e+4] = a>>4 | (h>>2&3)<<4
				u[e+8] = b&15 | (h>>4&3)<<4
				u[e+12] = b>>4 | (h>>6&3)<<4
			}
		}
		packQ6_K(out, &u)
	default:
		panic("kernels: unpackX8: " + t.String())
	}
}

// packQ6_K writes the 6-bit quants u into the ql and qh fields of a Q6_K
// block (the inverse of unpackQ6_K).
func packQ6_K(x []byte, u *[QK_K]uint8) {
	for h := 0; h < 2; h++ {
		ql := x[64*h : 64*h+64]
		qh := x[128+32*h : 128+32*h+32]
		qq := u[128*h : 128*h+128]
		for l := 0; l < 32; l++ {
			ql[l] = qq[l]&0xf | (qq[l+64]&0xf)<<4
			ql[l+32] = qq[l+32]&0xf | (qq[l+96]&0xf)<<4
			qh[l] = qq[l]>>4 | (qq[l+32]>>4)<<2 | (qq[l+64]>>4)<<4 | (qq[l+96]>>4)<<6
		}
	}
}

// X8TileFunc computes the products of nGroups row groups of an x8 matrix
// against nTok activations: for g < nGroups, r < 8 and t < nTok,
//
//	out[t*outStride + 8g + r] = dot(n, row 8g+r, a[t*aStride:])
//
// where w starts at group 0's first block group (nb block groups per row
// group) and dot is the weight type's DotFunc on the row's original bytes:
// every result is bit-identical to that call.
type X8TileFunc func(n int, w []byte, nGroups int, a []byte, aStride, nTok int, out []float32, outStride int)

var x8Scratch = sync.Pool{New: func() any { return new([]byte) }}

// genericX8Tile is the pure-Go x8 tile of type t: each group's rows are
// unpacked to the file's layout and multiplied with the type's dot.
func genericX8Tile(t Type, dot DotFunc) X8TileFunc {
	return func(n int, w []byte, nGroups int, a []byte, aStride, nTok int, out []float32, outStride int) {
		rb, err := t.RowSize(n)
		if err != nil {
			panic("kernels: x8 tile: " + err.Error())
		}
		vt := formats[t].VecDotType
		ab, _ := vt.RowSize(n)
		checkX8Tile(rb, w, nGroups, ab, a, aStride, nTok, out, outStride)
		bp := x8Scratch.Get().(*[]byte)
		defer x8Scratch.Put(bp)
		if cap(*bp) < rb {
			*bp = make([]byte, rb)
		}
		row := (*bp)[:rb]
		m := Matrix{Type: t, Rows: 8, Cols: n, Layout: LayoutX8}
		for g := 0; g < nGroups; g++ {
			m.Data = w[g*8*rb : (g+1)*8*rb]
			for r := 0; r < 8; r++ {
				UnpackX8Row(row, &m, r)
				for k := 0; k < nTok; k++ {
					out[k*outStride+8*g+r] = dot(n, row, a[k*aStride:k*aStride+ab])
				}
			}
		}
	}
}

// checkX8Tile panics unless the tile's groups, activations and outputs lie
// inside their slices (rowBytes and actBytes are the sizes one dot reads).
func checkX8Tile(rowBytes int, w []byte, nGroups, actBytes int, a []byte, aStride, nTok int, out []float32, outStride int) {
	if nGroups < 0 || nTok < 0 || aStride < 0 || outStride < 0 {
		panic("kernels: x8 tile: negative size or stride")
	}
	if nGroups == 0 || nTok == 0 {
		return
	}
	if nGroups > len(w)/(8*max(rowBytes, 1)) || !spanFits(actBytes, aStride, nTok, len(a)) ||
		!spanFits(8*nGroups, outStride, nTok, len(out)) {
		panic("kernels: x8 tile: groups, activations or outputs out of range")
	}
}
