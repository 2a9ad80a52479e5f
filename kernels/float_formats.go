package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
)

// This file holds the plain float formats (F32, F16, BF16), the row helpers
// QuantizeRow / DequantizeRow, and small numeric helpers shared by the block
// formats of this package.
//
// Floating-point rules used throughout (they are what make the pure-Go code a
// bit-exact specification for the assembly twins):
//
//   - Every float32 operation is rounded to float32 (round-to-nearest-even).
//   - No fused multiply-add anywhere. Go may fuse x*y+z on GOAMD64=v3, so every
//     product that feeds an addition is wrapped in an explicit float32(...)
//     conversion, which the language spec defines as a rounding point that
//     forbids fusion. Assembly twins must use VMULPS then VADDPS (never
//     VFMADD*).
//   - int32 → float32 conversions round to nearest even (CVTSI2SS/VCVTDQ2PS
//     under the default MXCSR).

func init() {
	for i := range fp16Table {
		fp16Table[i] = FP16ToFP32(uint16(i))
	}
	registerFormat(Format{Type: F32, VecDotType: F32, Quantize: quantizeF32, Dequantize: dequantizeF32, Dot: dotF32})
	registerFormat(Format{Type: F16, VecDotType: F16, Quantize: quantizeF16, Dequantize: dequantizeF16, Dot: dotF16})
	registerFormat(Format{Type: BF16, VecDotType: BF16, Quantize: quantizeBF16, Dequantize: dequantizeBF16, Dot: dotBF16})
}

// QuantizeRow converts src into dst in type t with the format's reference
// quantizer. len(src) must be a whole number of t's blocks and len(dst) must
// be exactly the row size.
func QuantizeRow(t Type, dst []byte, src []float32) error {
	f, err := FormatOf(t)
	if err != nil {
		return err
	}
	size, err := t.RowSize(len(src))
	if err != nil {
		return err
	}
	if len(dst) != size {
		return fmt.Errorf("kernels: %s: %d elements need %d bytes, destination has %d", t, len(src), size, len(dst))
	}
	f.Quantize(dst, src)
	return nil
}

// DequantizeRow expands src (whole blocks of type t) into dst. len(dst) must
// be a whole number of blocks and len(src) exactly the matching row size.
func DequantizeRow(t Type, dst []float32, src []byte) error {
	f, err := FormatOf(t)
	if err != nil {
		return err
	}
	size, err := t.RowSize(len(dst))
	if err != nil {
		return err
	}
	if len(src) != size {
		return fmt.Errorf("kernels: %s: %d elements need %d bytes, source has %d", t, len(dst), size, len(src))
	}
	f.Dequantize(dst, src)
	return nil
}

// ---------------------------------------------------------------------------
// Shared numeric helpers.

// fp16Table maps every binary16 bit pattern to its exact float32 value.
var fp16Table [1 << 16]float32

// fp16At reads the little-endian binary16 at b[0:2] as float32.
func fp16At(b []byte) float32 { return fp16Table[binary.LittleEndian.Uint16(b)] }

func putFP16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, FP32ToFP16(f)) }

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

// nearestInt is ggml's nearest_int: round to nearest, ties to even, through
// the 1.5·2^23 magic number. It is only meaningful for |f| <= 4194303 and is
// reproduced bit for bit (including its garbage) outside that range.
//
// The float32(f) conversion is a rounding point: without it, Go on GOAMD64=v3
// could fuse an inlined caller's product into this addition (VFMADD).
func nearestInt(f float32) int32 {
	v := float32(f) + 12582912
	return int32(math.Float32bits(v)&0x007fffff) - 0x00400000
}

// hsum8 reduces 8 lanes in the order of llama.cpp's hsum_float_8 (AVX:
// extract the high 128 bits, add, movehl, movehdup):
//
//	r[j] = a[j] + a[j+4]   (j = 0..3)
//	sum  = (r[0] + r[2]) + (r[1] + r[3])
func hsum8(a *[8]float32) float32 {
	r0 := a[0] + a[4]
	r1 := a[1] + a[5]
	r2 := a[2] + a[6]
	r3 := a[3] + a[7]
	return (r0 + r2) + (r1 + r3)
}

// ---------------------------------------------------------------------------
// F32

func quantizeF32(dst []byte, src []float32) {
	_ = dst[:4*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func dequantizeF32(dst []float32, src []byte) {
	_ = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// ---------------------------------------------------------------------------
// F16

func quantizeF16(dst []byte, src []float32) {
	_ = dst[:2*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], FP32ToFP16(v))
	}
}

func dequantizeF16(dst []float32, src []byte) {
	_ = src[:2*len(dst)]
	for i := range dst {
		dst[i] = fp16Table[binary.LittleEndian.Uint16(src[2*i:])]
	}
}

// ---------------------------------------------------------------------------
// BF16

func quantizeBF16(dst []byte, src []float32) {
	_ = dst[:2*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], FP32ToBF16(v))
	}
}

func dequantizeBF16(dst []float32, src []byte) {
	_ = src[:2*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

// ---------------------------------------------------------------------------
// Float dot products (F32·F32, F16·F16, BF16·BF16).
//
// Accumulation order (identical for the three types; x = weight row w,
// y = activation row a, both widened exactly to float32; n is any length):
//
//  1. Four vector accumulators V0..V3 of 8 float32 lanes each, all +0.
//  2. For each full group g of 32 elements (g = 0 .. n/32-1), for k = 0..3 and
//     j = 0..7, with i = 32*g + 8*k + j:
//     Vk[j] = Vk[j] + float32(x[i]*y[i])       (VMULPS, then VADDPS)
//  3. W = (V0 + V2) + (V1 + V3), lane-wise.
//  4. t[j] = W[j] + W[j+4] (j = 0..3); s = (t[0] + t[1]) + (t[2] + t[3]).
//     (This is ggml's GGML_F32x8_REDUCE: add halves, then two HADDPS.)
//  5. Tail: for i = 32*(n/32) .. n-1 in increasing order,
//     s = s + float32(x[i]*y[i])               (scalar float32)
//  6. Return s.
//
// This is the structure of ggml_vec_dot_f16 / ggml_vec_dot_f32 for AVX2
// (GGML_F32_STEP 32, 4 accumulators, GGML_F32x8_REDUCE), except that ggml
// uses FMA (which gives the same bits for F16, whose products are exact in
// float32) and sums the F16 tail in float64. ggml's AVX2 BF16 dot has the same
// accumulators but a different final lane order. So for F16 rows of a
// multiple of 32 elements this should reproduce llama.cpp's AVX2 F16 dot bit
// for bit (from reading ggml's source; not run against it).

// floatDotReduce applies steps 3 and 4 to the four accumulators.
func floatDotReduce(v *[4][8]float32) float32 {
	var w [8]float32
	for j := 0; j < 8; j++ {
		w[j] = (v[0][j] + v[2][j]) + (v[1][j] + v[3][j])
	}
	t0 := w[0] + w[4]
	t1 := w[1] + w[5]
	t2 := w[2] + w[6]
	t3 := w[3] + w[7]
	return (t0 + t1) + (t2 + t3)
}

// The pure-Go float dots compute the four accumulators one after the other
// (lanes are independent, so this is the same arithmetic as interleaving
// them), each pass keeping its 8 lanes in registers.

func le32f(b *[32]byte, i int) float32 {
	return math.Float32frombits(uint32(b[i]) | uint32(b[i+1])<<8 | uint32(b[i+2])<<16 | uint32(b[i+3])<<24)
}

func dotF32(n int, w, a []byte) float32 {
	_ = w[:4*n]
	_ = a[:4*n]
	ng := n / 32
	var v [4][8]float32
	for k := 0; k < 4; k++ {
		var s0, s1, s2, s3, s4, s5, s6, s7 float32
		for off := 32 * k; off < 128*ng; off += 128 {
			x := (*[32]byte)(w[off : off+32])
			y := (*[32]byte)(a[off : off+32])
			s0 += float32(le32f(x, 0) * le32f(y, 0))
			s1 += float32(le32f(x, 4) * le32f(y, 4))
			s2 += float32(le32f(x, 8) * le32f(y, 8))
			s3 += float32(le32f(x, 12) * le32f(y, 12))
			s4 += float32(le32f(x, 16) * le32f(y, 16))
			s5 += float32(le32f(x, 20) * le32f(y, 20))
			s6 += float32(le32f(x, 24) * le32f(y, 24))
			s7 += float32(le32f(x, 28) * le32f(y, 28))
		}
		v[k] = [8]float32{s0, s1, s2, s3, s4, s5, s6, s7}
	}
	s := floatDotReduce(&v)
	for i := 32 * ng; i < n; i++ {
		xv := math.Float32frombits(binary.LittleEndian.Uint32(w[4*i:]))
		yv := math.Float32frombits(binary.LittleEndian.Uint32(a[4*i:]))
		s += float32(xv * yv)
	}
	return s
}

func f16le(b *[16]byte, i int) float32 { return fp16Table[uint16(b[i])|uint16(b[i+1])<<8] }

func dotF16(n int, w, a []byte) float32 {
	_ = w[:2*n]
	_ = a[:2*n]
	ng := n / 32
	var v [4][8]float32
	for k := 0; k < 4; k++ {
		var s0, s1, s2, s3, s4, s5, s6, s7 float32
		for off := 16 * k; off < 64*ng; off += 64 {
			x := (*[16]byte)(w[off : off+16])
			y := (*[16]byte)(a[off : off+16])
			s0 += float32(f16le(x, 0) * f16le(y, 0))
			s1 += float32(f16le(x, 2) * f16le(y, 2))
			s2 += float32(f16le(x, 4) * f16le(y, 4))
			s3 += float32(f16le(x, 6) * f16le(y, 6))
			s4 += float32(f16le(x, 8) * f16le(y, 8))
			s5 += float32(f16le(x, 10) * f16le(y, 10))
			s6 += float32(f16le(x, 12) * f16le(y, 12))
			s7 += float32(f16le(x, 14) * f16le(y, 14))
		}
		v[k] = [8]float32{s0, s1, s2, s3, s4, s5, s6, s7}
	}
	s := floatDotReduce(&v)
	for i := 32 * ng; i < n; i++ {
		xv := fp16Table[binary.LittleEndian.Uint16(w[2*i:])]
		yv := fp16Table[binary.LittleEndian.Uint16(a[2*i:])]
		s += float32(xv * yv)
	}
	return s
}

func bf16le(b *[16]byte, i int) float32 {
	return math.Float32frombits(uint32(b[i])<<16 | uint32(b[i+1])<<24)
}

func dotBF16(n int, w, a []byte) float32 {
	_ = w[:2*n]
	_ = a[:2*n]
	ng := n / 32
	var v [4][8]float32
	for k := 0; k < 4; k++ {
		var s0, s1, s2, s3, s4, s5, s6, s7 float32
		for off := 16 * k; off < 64*ng; off += 64 {
			x := (*[16]byte)(w[off : off+16])
			y := (*[16]byte)(a[off : off+16])
			s0 += float32(bf16le(x, 0) * bf16le(y, 0))
			s1 += float32(bf16le(x, 2) * bf16le(y, 2))
			s2 += float32(bf16le(x, 4) * bf16le(y, 4))
			s3 += float32(bf16le(x, 6) * bf16le(y, 6))
			s4 += float32(bf16le(x, 8) * bf16le(y, 8))
			s5 += float32(bf16le(x, 10) * bf16le(y, 10))
			s6 += float32(bf16le(x, 12) * bf16le(y, 12))
			s7 += float32(bf16le(x, 14) * bf16le(y, 14))
		}
		v[k] = [8]float32{s0, s1, s2, s3, s4, s5, s6, s7}
	}
	s := floatDotReduce(&v)
	for i := 32 * ng; i < n; i++ {
		xv := math.Float32frombits(uint32(binary.LittleEndian.Uint16(w[2*i:])) << 16)
		yv := math.Float32frombits(uint32(binary.LittleEndian.Uint16(a[2*i:])) << 16)
		s += float32(xv * yv)
	}
	return s
}
