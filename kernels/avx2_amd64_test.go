package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Tests pinning every AVX2 kernel to its pure-Go twin, bit for bit.

func needAVX2(tb testing.TB) {
	tb.Helper()
	if !HasAVX2 {
		tb.Skip("CPU lacks AVX2+FMA+F16C: no assembly kernels to test")
	}
}

// wOffsets of the binary16 scale fields of each weight block type, and the
// block sizes.
type blockLayout struct {
	size   int   // bytes per block
	elems  int   // elements per block
	fp16At []int // offsets of binary16 scale fields
	f32At  []int // offsets of float32 scale fields (Q8_K)
}

var layouts = map[Type]blockLayout{
	Q4_K: {size: blockQ4_KSize, elems: QK_K, fp16At: []int{0, 2}},
	Q6_K: {size: blockQ6_KSize, elems: QK_K, fp16At: []int{208}},
	Q8_0: {size: blockQ8_0Size, elems: 32, fp16At: []int{0}},
	Q5_0: {size: blockQ5_0Size, elems: 32, fp16At: []int{0}},
	Q8_K: {size: blockQ8_KSize, elems: QK_K, f32At: []int{0}},
}

// scale modes for random blocks.
const (
	scaleNormal  = iota // log-uniform in [1e-4, 1)
	scaleExtreme        // ±65504, min normal/subnormal, ±0
	scaleMixed          // either, per block
)

var extremeF16 = []uint16{0x7bff, 0xfbff, 0x0400, 0x8400, 0x0001, 0x8001, 0x0000, 0x8000, 0x3c00, 0x03ff}

func randF16Scale(r *rand.Rand, mode int) uint16 {
	if mode == scaleExtreme || (mode == scaleMixed && r.IntN(4) == 0) {
		return extremeF16[r.IntN(len(extremeF16))]
	}
	v := float32(math.Pow(10, -4*r.Float64()))
	if r.IntN(2) == 0 {
		v = -v
	}
	return FP32ToFP16(v)
}

var extremeF32 = []float32{1e-30, -1e-30, 3e30, -3e30, 1.4e-45, 0, float32(math.Copysign(0, -1)), 1, 1.0 / 127}

func randF32Scale(r *rand.Rand, mode int) float32 {
	if mode == scaleExtreme || (mode == scaleMixed && r.IntN(4) == 0) {
		return extremeF32[r.IntN(len(extremeF32))]
	}
	v := float32(math.Pow(10, -6*r.Float64()))
	if r.IntN(2) == 0 {
		v = -v
	}
	return v
}

// randBlocks returns nb blocks of type t with random bytes and finite scales.
func randBlocks(r *rand.Rand, t Type, nb, mode int) []byte {
	l := layouts[t]
	b := make([]byte, nb*l.size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	fixScales(r, t, b, mode)
	return b
}

// fixScales overwrites the scale fields of every block of b with finite
// values of the given mode.
func fixScales(r *rand.Rand, t Type, b []byte, mode int) {
	l := layouts[t]
	for off := 0; off+l.size <= len(b); off += l.size {
		for _, o := range l.fp16At {
			binary.LittleEndian.PutUint16(b[off+o:], randF16Scale(r, mode))
		}
		for _, o := range l.f32At {
			binary.LittleEndian.PutUint32(b[off+o:], math.Float32bits(randF32Scale(r, mode)))
		}
	}
}

// sanitizeScales replaces non-finite scale fields (fuzz input) by finite ones.
func sanitizeScales(t Type, b []byte) {
	l := layouts[t]
	for off := 0; off+l.size <= len(b); off += l.size {
		for _, o := range l.fp16At {
			if h := binary.LittleEndian.Uint16(b[off+o:]); h&0x7c00 == 0x7c00 {
				binary.LittleEndian.PutUint16(b[off+o:], h&^0x4000)
			}
		}
		for _, o := range l.f32At {
			if u := binary.LittleEndian.Uint32(b[off+o:]); u&0x7f800000 == 0x7f800000 {
				binary.LittleEndian.PutUint32(b[off+o:], u&^0x40000000)
			}
		}
	}
}

func sameBits(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }

// inContract maps activation bytes into the AVX2 kernels' contract: for a
// Q8_0 weight row, activation quants are never -128 (see q8_0Block in
// _asm/q8_0.go; TestQ8_0ActivationsAvoidMinus128 checks the conversions).
func inContract(typ Type, a []byte) []byte {
	if typ != Q8_0 {
		return a
	}
	a = append([]byte(nil), a...)
	for off := 0; off+blockQ8_0Size <= len(a); off += blockQ8_0Size {
		for i := off + 2; i < off+blockQ8_0Size; i++ {
			if a[i] == 0x80 {
				a[i] = 0x81
			}
		}
	}
	return a
}

func checkDotPair(tb testing.TB, typ Type, n int, w, a []byte, what string) {
	tb.Helper()
	f, _ := FormatOf(typ)
	a = inContract(typ, a)
	want := f.Dot(n, w, a)
	got := avx2Dots[typ](n, w, a)
	if !sameBits(got, want) {
		tb.Fatalf("%s n=%d %s: avx2 %v (%#08x), go %v (%#08x)", typ, n, what, got, math.Float32bits(got), want, math.Float32bits(want))
	}
}

var quantDotTypes = []Type{Q4_K, Q6_K, Q8_0, Q5_0}

func TestAVX2DotRandomBytes(t *testing.T) {
	needAVX2(t)
	r := rand.New(rand.NewPCG(11, 12))
	for _, typ := range quantDotTypes {
		f, _ := FormatOf(typ)
		l := layouts[typ]
		for _, nb := range []int{1, 2, 3, 5, 8, 17, 64} {
			for mode := scaleNormal; mode <= scaleMixed; mode++ {
				for rep := 0; rep < 20; rep++ {
					w := randBlocks(r, typ, nb, mode)
					a := randBlocks(r, f.VecDotType, nb, mode)
					checkDotPair(t, typ, nb*l.elems, w, a, fmt.Sprintf("random mode %d rep %d", mode, rep))
				}
			}
		}
	}
}

func TestAVX2DotQuantizedRows(t *testing.T) {
	needAVX2(t)
	r := rand.New(rand.NewPCG(13, 14))
	for _, typ := range append(quantDotTypes, F32, F16, BF16) {
		f, _ := FormatOf(typ)
		for _, n := range []int{256, 512, 768, 2048, 5632} {
			for wn, w := range testRows(r, n) {
				for an, a := range testRows(r, n) {
					wq := quantizeTo(t, typ, w)
					aq := quantizeTo(t, f.VecDotType, a)
					checkDotPair(t, typ, n, wq, aq, wn+"·"+an)
				}
			}
		}
	}
}

// TestAVX2DotIntExtremes: all-127 / all -128 int8 quants, all-max nibbles,
// with the largest and smallest scales.
func TestAVX2DotIntExtremes(t *testing.T) {
	needAVX2(t)
	r := rand.New(rand.NewPCG(15, 16))
	fills := []byte{0x00, 0x7f, 0x80, 0xff, 0x81, 0x0f, 0xf0, 0x55, 0xaa}
	for _, typ := range quantDotTypes {
		f, _ := FormatOf(typ)
		l := layouts[typ]
		for _, nb := range []int{1, 3, 16} {
			for _, fw := range fills {
				for _, fa := range fills {
					for mode := scaleNormal; mode <= scaleExtreme; mode++ {
						w := make([]byte, nb*l.size)
						a := make([]byte, nb*layouts[f.VecDotType].size)
						for i := range w {
							w[i] = fw
						}
						for i := range a {
							a[i] = fa
						}
						fixScales(r, typ, w, mode)
						fixScales(r, f.VecDotType, a, mode)
						checkDotPair(t, typ, nb*l.elems, w, a, fmt.Sprintf("fill %#02x·%#02x mode %d", fw, fa, mode))
					}
				}
			}
		}
	}
}

func randFloatBytes(tb testing.TB, r *rand.Rand, typ Type, n int, wide bool) []byte {
	x := make([]float32, n)
	for i := range x {
		if wide {
			// Log-uniform magnitudes over most of the binary16 range.
			x[i] = float32(math.Pow(2, float64(r.IntN(40)-24)) * (r.Float64()*2 - 1))
		} else {
			x[i] = float32(r.NormFloat64())
		}
	}
	switch r.IntN(8) {
	case 0:
		x[r.IntN(n)] = 65504
	case 1:
		x[r.IntN(n)] = float32(math.Copysign(0, -1))
	case 2:
		x[r.IntN(n)] = 5.96e-8
	}
	return quantizeTo(tb, typ, x)
}

func TestAVX2DotFloatLengths(t *testing.T) {
	needAVX2(t)
	r := rand.New(rand.NewPCG(17, 18))
	for _, typ := range []Type{F32, F16, BF16} {
		for n := 0; n <= 200; n++ {
			for rep := 0; rep < 4; rep++ {
				wide := rep%2 == 1
				w := randFloatBytes(t, r, typ, max(n, 1), wide)
				a := randFloatBytes(t, r, typ, max(n, 1), wide)
				checkDotPair(t, typ, n, w, a, fmt.Sprintf("rep %d", rep))
			}
		}
		for _, n := range []int{1023, 1024, 1025, 4096, 4133} {
			w := randFloatBytes(t, r, typ, n, true)
			a := randFloatBytes(t, r, typ, n, true)
			checkDotPair(t, typ, n, w, a, "long")
		}
	}
}

func TestAVX2DotZeroLength(t *testing.T) {
	needAVX2(t)
	for typ, dot := range avx2Dots {
		f, _ := FormatOf(typ)
		if got, want := dot(0, nil, nil), f.Dot(0, nil, nil); !sameBits(got, want) {
			t.Errorf("%s n=0: avx2 %v, go %v", typ, got, want)
		}
	}
}

func TestAVX2DotPanicsOnPartialBlock(t *testing.T) {
	needAVX2(t)
	for _, typ := range quantDotTypes {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic on a partial block", typ)
				}
			}()
			avx2Dots[typ](layouts[typ].elems+1, make([]byte, 1024), make([]byte, 1024))
		}()
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic on short rows", typ)
				}
			}()
			avx2Dots[typ](2*layouts[typ].elems, make([]byte, layouts[typ].size), make([]byte, 4096))
		}()
	}
}

// ---------------------------------------------------------------------------
// Activation conversions.

func quantInputs(r *rand.Rand, n int) map[string][]float32 {
	rows := testRows(r, n)
	ties := make([]float32, n)
	for i := range ties {
		// Multiples of 0.5 around a block max of 127: exact ties after
		// scaling for round-half-away vs half-even.
		ties[i] = float32(r.IntN(509)-254) / 2
		if i%32 == 0 {
			ties[i] = 127
		}
	}
	rows["ties"] = ties
	signTie := gaussRow(r, n, 1)
	for i := 0; i < n; i += 64 {
		signTie[i+3] = 7 // same |max| with both signs: the first wins
		signTie[i+40] = -7
	}
	rows["sign-tie"] = signTie
	sub := make([]float32, n)
	for i := range sub {
		sub[i] = float32(r.NormFloat64()) * 1e-39 // subnormal: scales overflow
	}
	rows["subnormal"] = sub
	huge := gaussRow(r, n, 1e37)
	rows["huge"] = huge
	one := make([]float32, n)
	for i := range one {
		if i%37 == 0 {
			one[i] = -3.5
		}
	}
	rows["sparse"] = one
	return rows
}

func TestAVX2Activations(t *testing.T) {
	needAVX2(t)
	r := rand.New(rand.NewPCG(19, 20))
	generic := GenericBackend()
	for typ, conv := range avx2Activations {
		var ref QuantizeFunc
		if q, ok := generic.acts[typ]; ok {
			ref = q
		} else {
			f, _ := FormatOf(typ)
			ref = f.Quantize
		}
		for _, n := range []int{256, 512, 4096} {
			for name, x := range quantInputs(r, n) {
				size, _ := typ.RowSize(n)
				want, got := make([]byte, size), make([]byte, size)
				ref(want, x)
				for i := range got {
					got[i] = 0xcd
				}
				conv(got, x)
				if i := firstDiff(got, want); i >= 0 {
					t.Fatalf("%s n=%d %s: byte %d: avx2 %#02x, go %#02x", typ, n, name, i, got[i], want[i])
				}
			}
		}
	}
}

func TestAVX2QuantizeQ8_0Reference(t *testing.T) {
	needAVX2(t)
	r := rand.New(rand.NewPCG(21, 22))
	for _, n := range []int{32, 64, 4096} {
		for name, x := range quantInputs(r, max(n, 256)) {
			x = x[:n]
			want, got := make([]byte, n/32*34), make([]byte, n/32*34)
			quantizeQ8_0(want, x)
			quantizeQ8_0RefFast(got, x)
			if i := firstDiff(got, want); i >= 0 {
				t.Fatalf("n=%d %s: byte %d: avx2 %#02x, go %#02x", n, name, i, got[i], want[i])
			}
		}
	}
}

func TestAVX2QuantizeF16AllSpecials(t *testing.T) {
	needAVX2(t)
	// A stride through every float32 bit pattern (NaNs, infinities,
	// subnormals, rounding boundaries included), plus odd lengths.
	const stride = 4093
	x := make([]float32, 0, 1<<20+5)
	for u := uint64(0); u < 1<<32; u += stride {
		x = append(x, math.Float32frombits(uint32(u)))
	}
	for _, u := range []uint32{0x477ff000, 0x477fefff, 0x477ff001, 0x33000000, 0x33000001, 0x387fc000, 0x7f800001, 0xffa00000} {
		x = append(x, math.Float32frombits(u))
	}
	for _, n := range []int{len(x), len(x) - 3, 7, 1} {
		want, got := make([]byte, 2*n), make([]byte, 2*n)
		quantizeF16(want, x[:n])
		quantizeF16Fast(got, x[:n])
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("n=%d: element %d (%#08x): avx2 %#04x, go %#04x", n, i/2, math.Float32bits(x[i/2]),
				binary.LittleEndian.Uint16(got[i&^1:]), binary.LittleEndian.Uint16(want[i&^1:]))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestQ8_0ActivationsAvoidMinus128: the Q8_0 conversions never emit a -128
// quant in a block whose scale is nonzero, the precondition of the AVX2 Q8_0
// dot (a -128 in a zero-scale block cannot change the result: the block adds
// ±0 whatever its integer sum).
func TestQ8_0ActivationsAvoidMinus128(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	convs := map[string]QuantizeFunc{"reference": quantizeQ8_0, "activations": QuantizeQ8_0Activations}
	if HasAVX2 {
		convs["avx2"] = avx2Activations[Q8_0]
	}
	for name, conv := range convs {
		for rn, x := range quantInputs(r, 4096) {
			q := make([]byte, len(x)/32*blockQ8_0Size)
			conv(q, x)
			for off := 0; off < len(q); off += blockQ8_0Size {
				if binary.LittleEndian.Uint16(q[off:])&0x7fff == 0 {
					continue
				}
				for i := off + 2; i < off+blockQ8_0Size; i++ {
					if q[i] == 0x80 {
						t.Fatalf("%s %s: block %d has a -128 quant", name, rn, off/blockQ8_0Size)
					}
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Tiles (many rows, many tokens).

func TestAVX2TilesMatchDot(t *testing.T) {
	needAVX2(t)
	r := rand.New(rand.NewPCG(27, 28))
	for typ, tile := range avx2Tiles {
		f, _ := FormatOf(typ)
		bs := typ.BlockSize()
		for _, n := range []int{0, max(bs, 32), 2 * max(bs, 32), 11 * max(bs, 32), 1024} {
			if typ == F32 || typ == F16 || typ == BF16 {
				n += r.IntN(9)
			}
			rb, _ := typ.RowSize(n)
			ab, _ := f.VecDotType.RowSize(n)
			for _, shape := range [][2]int{{1, 1}, {7, 1}, {1, 2}, {1, 4}, {3, 3}, {3, 5}, {5, 8}, {2, 9}, {9, 7}} {
				nRows, nTok := shape[0], shape[1]
				wStride, aStride, outStride := rb+r.IntN(3)*5, ab+r.IntN(3)*3, nRows+r.IntN(3)
				w := make([]byte, (nRows-1)*wStride+rb)
				a := make([]byte, (nTok-1)*aStride+ab)
				for i := 0; i < nRows && n > 0; i++ {
					var row []byte
					if typ == F32 || typ == F16 || typ == BF16 {
						row = randFloatBytes(t, r, typ, max(n, 1), i%2 == 0)
					} else {
						row = quantizeTo(t, typ, gaussRow(r, n, 0.02))
					}
					copy(w[i*wStride:], row[:rb])
				}
				for j := 0; j < nTok && n > 0; j++ {
					copy(a[j*aStride:], inContract(typ, quantizeTo(t, f.VecDotType, gaussRow(r, n, 1)))[:ab])
				}
				out := make([]float32, (nTok-1)*outStride+nRows)
				for i := range out {
					out[i] = float32(math.NaN())
				}
				tile(n, w, wStride, nRows, a, aStride, nTok, out, outStride)
				for i := 0; i < nRows; i++ {
					for j := 0; j < nTok; j++ {
						want := f.Dot(n, w[i*wStride:i*wStride+rb], a[j*aStride:j*aStride+ab])
						if got := out[j*outStride+i]; !sameBits(got, want) {
							t.Fatalf("%s n=%d %dx%d: out[row %d, tok %d] = %v, Dot %v", typ, n, nRows, nTok, i, j, got, want)
						}
					}
				}
			}
		}
	}
}

func TestAVX2TilesCheckBounds(t *testing.T) {
	needAVX2(t)
	tile := avx2Tiles[Q4_K]
	w := make([]byte, 3*144)
	a := make([]byte, 2*292)
	out := make([]float32, 8)
	for name, call := range map[string]func(){
		"rows":    func() { tile(256, w, 144, 4, a, 292, 1, out, 4) },
		"tokens":  func() { tile(256, w, 144, 3, a, 292, 3, out, 3) },
		"outputs": func() { tile(256, w, 144, 3, a, 292, 2, out, 6) },
		"stride":  func() { tile(256, w, -1, 2, a, 292, 1, out, 4) },
		"huge":    func() { tile(256, w, 1<<62, 3, a, 292, 1, out, 4) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			call()
		}()
	}
	tile(256, w, 144, 3, a, 292, 2, out, 4) // fits: no panic
}

// ---------------------------------------------------------------------------
// The registered backend.

func TestAVX2BackendMatMulMatchesGeneric(t *testing.T) {
	needAVX2(t)
	be, err := BackendByName(AVX2BackendName)
	if err != nil {
		t.Fatal(err)
	}
	if auto, _ := BackendByName(""); auto != be {
		t.Errorf("auto backend is %s, want %s", auto.Name(), AVX2BackendName)
	}
	p := newTestPool(t, 2, PoolOptions{})
	r := rand.New(rand.NewPCG(23, 24))
	const rows, cols, nTok = 37, 512, 6 // tiles: 4-token kernel, 2 single tokens
	x := gaussRow(r, nTok*cols, 1)
	for _, typ := range []Type{F32, F16, BF16, Q8_0, Q5_0, Q4_K, Q6_K} {
		if k, err := be.kernel(typ); err != nil || k.tile == nil {
			t.Errorf("%s: the backend has no AVX2 tile kernel (%v)", typ, err)
		}
		wf := gaussRow(r, rows*cols, 0.02)
		size, _ := typ.RowSize(cols)
		data := make([]byte, rows*size)
		for i := 0; i < rows; i++ {
			QuantizeRow(typ, data[i*size:(i+1)*size], wf[i*cols:(i+1)*cols])
		}
		w, err := NewMatrix(typ, rows, cols, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, nt := range []int{1, nTok} {
			want, got := make([]float32, nt*rows), make([]float32, nt*rows)
			GenericBackend().MatMul(p, want, w, x, nt)
			be.MatMul(p, got, w, x, nt)
			for i := range want {
				if !sameBits(got[i], want[i]) {
					t.Fatalf("%s, %d tokens: out[%d]: avx2 %v, generic %v", typ, nt, i, got[i], want[i])
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Fuzz tests: arbitrary block bytes (scales made finite).

func fuzzDot(f *testing.F, typ Type) {
	fm, _ := FormatOf(typ)
	wl, al := layouts[typ], layouts[fm.VecDotType]
	r := rand.New(rand.NewPCG(uint64(typ), 99))
	for _, nb := range []int{1, 2, 3} {
		for mode := scaleNormal; mode <= scaleMixed; mode++ {
			f.Add(append(randBlocks(r, typ, nb, mode), randBlocks(r, fm.VecDotType, nb, mode)...))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !HasAVX2 {
			t.Skip("no AVX2")
		}
		nb := len(data) / (wl.size + al.size)
		if nb == 0 {
			return
		}
		w := append([]byte(nil), data[:nb*wl.size]...)
		a := append([]byte(nil), data[nb*wl.size:nb*(wl.size+al.size)]...)
		sanitizeScales(typ, w)
		sanitizeScales(fm.VecDotType, a)
		checkDotPair(t, typ, nb*wl.elems, w, a, "fuzz")
	})
}

func FuzzDotQ4K(f *testing.F)  { fuzzDot(f, Q4_K) }
func FuzzDotQ6K(f *testing.F)  { fuzzDot(f, Q6_K) }
func FuzzDotQ8_0(f *testing.F) { fuzzDot(f, Q8_0) }
func FuzzDotQ5_0(f *testing.F) { fuzzDot(f, Q5_0) }

func FuzzDotF16(f *testing.F) {
	f.Add([]byte{0, 0x3c, 0, 0xbc, 0xff, 0x7b, 1, 0}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		if !HasAVX2 {
			t.Skip("no AVX2")
		}
		n := len(data) / 4
		w := append([]byte(nil), data[:2*n]...)
		a := append([]byte(nil), data[2*n:4*n]...)
		for _, b := range [][]byte{w, a} { // no NaN or infinity
			for i := 0; i+1 < len(b); i += 2 {
				if b[i+1]&0x7c == 0x7c {
					b[i+1] &^= 0x40
				}
			}
		}
		checkDotPair(t, F16, n, w, a, "fuzz")
	})
}

func FuzzQuantizeQ8K(f *testing.F) {
	f.Add(make([]byte, 1024), int64(0))
	f.Fuzz(func(t *testing.T, data []byte, seed int64) {
		if !HasAVX2 {
			t.Skip("no AVX2")
		}
		n := len(data) / 4 / QK_K * QK_K
		if n == 0 {
			return
		}
		x := make([]float32, n)
		for i := range x {
			v := math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			if v != v || math.IsInf(float64(v), 0) {
				v = float32(seed % 1000)
			}
			x[i] = v
		}
		want, got := make([]byte, n/QK_K*blockQ8_KSize), make([]byte, n/QK_K*blockQ8_KSize)
		quantizeQ8_K(want, x)
		quantizeQ8_KFast(got, x)
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("byte %d: avx2 %#02x, go %#02x", i, got[i], want[i])
		}
	})
}

// ---------------------------------------------------------------------------
// Benchmarks: one row in cache (ns/op, MB/s of weight bytes), pure Go vs
// AVX2.

func benchDotPair(b *testing.B, typ Type, n int) {
	r := rand.New(rand.NewPCG(3, 4))
	f, _ := FormatOf(typ)
	wq := quantizeTo(b, typ, gaussRow(r, n, 0.02))
	aq := quantizeTo(b, f.VecDotType, gaussRow(r, n, 1))
	for _, impl := range []struct {
		name string
		dot  DotFunc
	}{{"go", f.Dot}, {"avx2", avx2Dots[typ]}} {
		b.Run(impl.name, func(b *testing.B) {
			if impl.dot == nil {
				b.Skip("no AVX2")
			}
			b.SetBytes(int64(len(wq)))
			var s float32
			for b.Loop() {
				s += impl.dot(n, wq, aq)
			}
			sinkF32 = s
		})
	}
}

func BenchmarkDotAVX2Q4_K(b *testing.B) { benchDotPair(b, Q4_K, 4096) }
func BenchmarkDotAVX2Q6_K(b *testing.B) { benchDotPair(b, Q6_K, 4096) }
func BenchmarkDotAVX2Q8_0(b *testing.B) { benchDotPair(b, Q8_0, 4096) }
func BenchmarkDotAVX2Q5_0(b *testing.B) { benchDotPair(b, Q5_0, 4096) }
func BenchmarkDotAVX2F32(b *testing.B)  { benchDotPair(b, F32, 4096) }
func BenchmarkDotAVX2F16(b *testing.B)  { benchDotPair(b, F16, 4096) }
func BenchmarkDotAVX2BF16(b *testing.B) { benchDotPair(b, BF16, 4096) }

// benchMatVec: a 5632×2048 matrix-vector product (TinyLlama's ffn_up shape)
// on one thread; "l3" reuses one matrix (it fits in L3), "dram" cycles
// through enough copies to exceed a 32 MiB L3. MB/s counts weight bytes.
func benchMatVec(b *testing.B, typ Type) {
	const rows, cols = 5632, 2048
	r := rand.New(rand.NewPCG(5, 6))
	f, _ := FormatOf(typ)
	rb, _ := typ.RowSize(cols)
	one := make([]byte, rows*rb)
	row := gaussRow(r, cols, 0.02)
	for i := 0; i < rows; i++ {
		if i%64 == 0 {
			row = gaussRow(r, cols, 0.02)
		}
		QuantizeRow(typ, one[i*rb:(i+1)*rb], row)
	}
	ncopy := max(1, (96<<20)/len(one))
	mats := make([][]byte, ncopy)
	for i := range mats {
		mats[i] = append([]byte(nil), one...)
	}
	aq := quantizeTo(b, f.VecDotType, gaussRow(r, cols, 1))
	out := make([]float32, rows)
	for _, impl := range []struct {
		name string
		dot  DotFunc
	}{{"go", f.Dot}, {"avx2", avx2Dots[typ]}} {
		for _, mem := range []string{"l3", "dram"} {
			b.Run(impl.name+"/"+mem, func(b *testing.B) {
				if impl.dot == nil {
					b.Skip("no AVX2")
				}
				b.SetBytes(int64(len(one)))
				i := 0
				for b.Loop() {
					m := mats[0]
					if mem == "dram" {
						m = mats[i%len(mats)]
						i++
					}
					for j := 0; j < rows; j++ {
						out[j] = impl.dot(cols, m[j*rb:(j+1)*rb], aq)
					}
				}
			})
		}
	}
}

// benchTile: one thread, 5632×2048 weights (TinyLlama's ffn_up) against
// nTok tokens: the per-(row, token) DotFunc loop MatMul runs today versus
// one DotTileFunc call. MB/s counts weight bytes per pass.
func benchTile(b *testing.B, typ Type, nTok int) {
	const rows, cols = 5632, 2048
	r := rand.New(rand.NewPCG(5, 6))
	f, _ := FormatOf(typ)
	rb, _ := typ.RowSize(cols)
	ab, _ := f.VecDotType.RowSize(cols)
	w := make([]byte, rows*rb)
	row := gaussRow(r, cols, 0.02)
	for i := 0; i < rows; i++ {
		if i%64 == 0 {
			row = gaussRow(r, cols, 0.02)
		}
		QuantizeRow(typ, w[i*rb:(i+1)*rb], row)
	}
	a := make([]byte, nTok*ab)
	for t := 0; t < nTok; t++ {
		copy(a[t*ab:], quantizeTo(b, f.VecDotType, gaussRow(r, cols, 1)))
	}
	out := make([]float32, nTok*rows)
	tile := avx2Tiles[typ]
	dot := avx2Dots[typ]
	b.Run("dots", func(b *testing.B) {
		if dot == nil {
			b.Skip("no AVX2")
		}
		b.SetBytes(int64(len(w)))
		for b.Loop() {
			for i := 0; i < rows; i++ {
				wr := w[i*rb : (i+1)*rb]
				for t := 0; t < nTok; t++ {
					out[t*rows+i] = dot(cols, wr, a[t*ab:(t+1)*ab])
				}
			}
		}
	})
	b.Run("tile", func(b *testing.B) {
		if tile == nil {
			b.Skip("no AVX2")
		}
		b.SetBytes(int64(len(w)))
		for b.Loop() {
			tile(cols, w, rb, rows, a, ab, nTok, out, rows)
		}
	})
}

func BenchmarkTileQ4_K_1tok(b *testing.B)  { benchTile(b, Q4_K, 1) }
func BenchmarkTileQ4_K_16tok(b *testing.B) { benchTile(b, Q4_K, 16) }
func BenchmarkTileQ6_K_1tok(b *testing.B)  { benchTile(b, Q6_K, 1) }
func BenchmarkTileQ6_K_16tok(b *testing.B) { benchTile(b, Q6_K, 16) }
func BenchmarkTileQ8_0_1tok(b *testing.B)  { benchTile(b, Q8_0, 1) }

func BenchmarkMatVecQ4_K(b *testing.B) { benchMatVec(b, Q4_K) }
func BenchmarkMatVecQ6_K(b *testing.B) { benchMatVec(b, Q6_K) }
func BenchmarkMatVecQ8_0(b *testing.B) { benchMatVec(b, Q8_0) }
func BenchmarkMatVecF16(b *testing.B)  { benchMatVec(b, F16) }

func benchActivation(b *testing.B, typ Type) {
	const n = 4096
	r := rand.New(rand.NewPCG(7, 8))
	x := gaussRow(r, n, 1)
	size, _ := typ.RowSize(n)
	q := make([]byte, size)
	ref := GenericBackend().acts[typ]
	if ref == nil {
		f, _ := FormatOf(typ)
		ref = f.Quantize
	}
	for _, impl := range []struct {
		name string
		q    QuantizeFunc
	}{{"go", ref}, {"avx2", avx2Activations[typ]}} {
		b.Run(impl.name, func(b *testing.B) {
			if impl.q == nil {
				b.Skip("no AVX2")
			}
			b.SetBytes(4 * n)
			for b.Loop() {
				impl.q(q, x)
			}
		})
	}
}

func BenchmarkActivationAVX2Q8_K(b *testing.B) { benchActivation(b, Q8_K) }
func BenchmarkActivationAVX2Q8_0(b *testing.B) { benchActivation(b, Q8_0) }
func BenchmarkActivationAVX2F16(b *testing.B)  { benchActivation(b, F16) }

// benchTileDRAM: the decode matvec (one token) over 5632×2048 matrices
// cycled through 192 MiB of copies, so that weights stream from memory as
// in a real model. MB/s counts weight bytes.
func benchTileDRAM(b *testing.B, typ Type) {
	needAVX2(b)
	const rows, cols = 5632, 2048
	r := rand.New(rand.NewPCG(5, 6))
	f, _ := FormatOf(typ)
	rb, _ := typ.RowSize(cols)
	one := make([]byte, rows*rb)
	row := gaussRow(r, cols, 0.02)
	for i := 0; i < rows; i++ {
		if i%64 == 0 {
			row = gaussRow(r, cols, 0.02)
		}
		QuantizeRow(typ, one[i*rb:(i+1)*rb], row)
	}
	mats := make([][]byte, max(2, (192<<20)/len(one)))
	for i := range mats {
		mats[i] = append([]byte(nil), one...)
	}
	a := quantizeTo(b, f.VecDotType, gaussRow(r, cols, 1))
	ab := len(a)
	out := make([]float32, rows)
	tile := avx2Tiles[typ]
	b.SetBytes(int64(len(one)))
	i := 0
	for b.Loop() {
		tile(cols, mats[i%len(mats)], rb, rows, a, ab, 1, out, rows)
		i++
	}
}

func BenchmarkTileDRAMQ4_K(b *testing.B) { benchTileDRAM(b, Q4_K) }
func BenchmarkTileDRAMQ6_K(b *testing.B) { benchTileDRAM(b, Q6_K) }
func BenchmarkTileDRAMQ8_0(b *testing.B) { benchTileDRAM(b, Q8_0) }

func BenchmarkTileDRAMF16(b *testing.B)    { benchTileDRAM(b, F16) }
func BenchmarkTileQ8_0_16tok(b *testing.B) { benchTile(b, Q8_0, 16) }
