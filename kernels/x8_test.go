package kernels

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// fma32Exact is a*b+c rounded once to float32, through math/big.
func fma32Exact(a, b, c float32) float32 {
	x := new(big.Float).SetPrec(300).SetFloat64(float64(a))
	x.Mul(x, new(big.Float).SetPrec(300).SetFloat64(float64(b)))
	x.Add(x, new(big.Float).SetPrec(300).SetFloat64(float64(c)))
	f, _ := x.Float32()
	if f == 0 { // big.Float has no signed zero for a zero sum
		return float32(float64(a)*float64(b) + float64(c))
	}
	return f
}

// fmaHardCases are inputs whose exact a*b+c lies just off a float32
// halfway point, where rounding twice (to float64, then float32) errs.
func fmaHardCases(r *rand.Rand, n int) [][3]float32 {
	var out [][3]float32
	for len(out) < n {
		a := float32(r.NormFloat64())
		b := float32(r.NormFloat64())
		p := float64(a) * float64(b)
		// c: the float32 nearest to -p's float32 rounding plus half an
		// ulp, so that p + c is a tiny value near a halfway point...
		pf := float32(p)
		ulp := math.Nextafter32(pf, float32(math.Inf(1))) - pf
		for _, k := range []float32{0.5, -0.5, 1.5, 0.25} {
			c := -pf + k*ulp
			out = append(out, [3]float32{a, b, c})
		}
		// ...and c large, so that p only decides the last bits.
		c := float32(math.Ldexp(1, r.IntN(20))) * float32(1+r.IntN(1<<20))
		out = append(out, [3]float32{a, b, c}, [3]float32{a, b, -c})
		// A product whose low half sits exactly at a float64 tie.
		x := math.Float32frombits(0x3f800001 + uint32(r.IntN(1<<22)))
		y := math.Float32frombits(0x3f800001 + uint32(r.IntN(1<<22)))
		z := -float32(float64(x) * float64(y))
		out = append(out, [3]float32{x, y, z}, [3]float32{x, y, float32(math.Ldexp(1, -30))})
	}
	return out
}

func TestFMA32Exact(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	cases := fmaHardCases(r, 20000)
	for i := 0; i < 50000; i++ {
		cases = append(cases, [3]float32{
			math.Float32frombits(r.Uint32()), math.Float32frombits(r.Uint32()), math.Float32frombits(r.Uint32())})
	}
	// The classic double-rounding trap: a*b = 1 + 2^-24 + 2^-60 in
	// float64 terms, with c chosen to land the float64 sum on a tie.
	cases = append(cases, [3]float32{1 + 0x1p-23, 1 + 0x1p-23, -0x1p-46})
	bad := 0
	for _, c := range cases {
		a, b, z := c[0], c[1], c[2]
		if isNaN32(a) || isNaN32(b) || isNaN32(z) {
			continue
		}
		got := fma32(a, b, z)
		if isInf32(a) || isInf32(b) || isInf32(z) || math.IsInf(float64(a)*float64(b), 0) {
			continue
		}
		want := fma32Exact(a, b, z)
		if !sameBits(got, want) && !(got == 0 && want == 0) {
			bad++
			if bad < 5 {
				t.Errorf("fma32(%g, %g, %g) = %g (%#08x), exact %g (%#08x)", a, b, z, got, math.Float32bits(got), want, math.Float32bits(want))
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d wrong", bad, len(cases))
	}
}

func isNaN32(x float32) bool { return x != x }
func isInf32(x float32) bool { return math.IsInf(float64(x), 0) }

// randX8Matrix returns a rows×cols matrix of type t in the file's layout
// with quantized Gaussian rows (every few rows raw random bytes with finite
// scales, for coverage of all bit patterns).
func randX8Matrix(tb testing.TB, r *rand.Rand, t Type, rows, cols int) *Matrix {
	tb.Helper()
	rb, _ := t.RowSize(cols)
	data := make([]byte, rows*rb)
	for i := 0; i < rows; i++ {
		if i%3 == 2 {
			copy(data[i*rb:], randBlocks(r, t, cols/t.BlockSize(), scaleMixed))
			continue
		}
		QuantizeRow(t, data[i*rb:(i+1)*rb], gaussRow(r, cols, 0.02))
	}
	m, err := NewMatrix(t, rows, cols, data)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func TestRepackX8RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	for _, typ := range X8Types {
		for _, shape := range [][2]int{{8, 256}, {16, 512}, {13, 256}, {3, 768}, {24, 1024}} {
			m := randX8Matrix(t, r, typ, shape[0], shape[1])
			x, err := RepackX8(make([]byte, len(m.Data)), m)
			if err != nil {
				t.Fatal(err)
			}
			if x.Layout != LayoutX8 || len(x.Data) != len(m.Data) {
				t.Fatalf("%s: layout %s, %d bytes", typ, x.Layout, len(x.Data))
			}
			row := make([]byte, m.RowBytes())
			for i := 0; i < m.Rows; i++ {
				UnpackX8Row(row, x, i)
				if j := firstDiff(row, m.Row(i)); j >= 0 {
					t.Fatalf("%s %v: row %d byte %d differs after the round trip", typ, shape, i, j)
				}
			}
			// GetRow and Dequantize read the x8 layout.
			want, got := make([]float32, m.Cols), make([]float32, m.Cols)
			for i := 0; i < m.Rows; i++ {
				GetRow(want, m, i)
				GetRow(got, x, i)
				for k := range want {
					if !sameBits(got[k], want[k]) {
						t.Fatalf("%s: GetRow(%d)[%d]: x8 %v, rows %v", typ, i, k, got[k], want[k])
					}
				}
			}
			all, allX := make([]float32, m.Rows*m.Cols), make([]float32, m.Rows*m.Cols)
			Dequantize(all, m)
			Dequantize(allX, x)
			for k := range all {
				if !sameBits(all[k], allX[k]) {
					t.Fatalf("%s: Dequantize[%d]: x8 %v, rows %v", typ, k, allX[k], all[k])
				}
			}
			if _, err := RepackX8(make([]byte, len(m.Data)), x); err == nil {
				t.Errorf("%s: repacking an x8 matrix was accepted", typ)
			}
		}
	}
	if _, err := RepackX8(make([]byte, 64), &Matrix{Type: F16, Rows: 8, Cols: 4, Data: make([]byte, 64)}); err == nil {
		t.Error("F16 was repacked")
	}
}

// x8Tiles are the x8 tile implementations to pin to the dot products: the
// generic backend's, and the assembly ones where the CPU runs them.
func x8Tiles() map[string]map[Type]X8TileFunc {
	impls := map[string]map[Type]X8TileFunc{"go": {}}
	for _, t := range X8Types {
		impls["go"][t] = genericX8Tile(t, formats[t].Dot)
	}
	if len(avx2X8Tiles) > 0 {
		impls["avx2"] = avx2X8Tiles
	}
	return impls
}

func TestX8TilesMatchDot(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	for name, tiles := range x8Tiles() {
		for typ, tile := range tiles {
			f := formats[typ]
			bs := typ.BlockSize()
			for _, nb := range []int{1, 2, 3, 8, 22} {
				n := nb * max(bs, 32)
				if typ == Q8_0 {
					n = nb * 32
				}
				for _, shape := range [][2]int{{1, 1}, {2, 1}, {1, 2}, {1, 3}, {1, 4}, {3, 5}, {2, 8}, {1, 9}, {5, 1}} {
					nGroups, nTok := shape[0], shape[1]
					m := randX8Matrix(t, r, typ, 8*nGroups, n)
					x, _ := RepackX8(make([]byte, len(m.Data)), m)
					ab, _ := f.VecDotType.RowSize(n)
					aStride := ab + r.IntN(3)*4
					a := make([]byte, (nTok-1)*aStride+ab)
					for k := 0; k < nTok; k++ {
						var act []byte
						if k%2 == 1 {
							act = randBlocks(r, f.VecDotType, n/f.VecDotType.BlockSize(), scaleMixed)
						} else {
							act = quantizeTo(t, f.VecDotType, gaussRow(r, n, 1))
						}
						copy(a[k*aStride:], inContract(typ, act)[:ab])
					}
					outStride := 8*nGroups + r.IntN(3)
					out := make([]float32, (nTok-1)*outStride+8*nGroups)
					for i := range out {
						out[i] = float32(math.NaN())
					}
					tile(n, x.Data, nGroups, a, aStride, nTok, out, outStride)
					for i := 0; i < m.Rows; i++ {
						for k := 0; k < nTok; k++ {
							want := f.Dot(n, m.Row(i), a[k*aStride:k*aStride+ab])
							if got := out[k*outStride+i]; !sameBits(got, want) {
								t.Fatalf("%s %s n=%d %d groups × %d tokens: row %d token %d: %v (%#08x), dot %v (%#08x)",
									name, typ, n, nGroups, nTok, i, k, got, math.Float32bits(got), want, math.Float32bits(want))
							}
						}
					}
				}
			}
		}
	}
}

func TestMatMulX8MatchesRows(t *testing.T) {
	r := rand.New(rand.NewPCG(37, 38))
	backends := []*Backend{GenericBackend()}
	if be, err := BackendByName(AVX2BackendName); err == nil && be != GenericBackend() {
		backends = append(backends, be)
	}
	for _, threads := range []int{1, 2, 3} {
		p := newTestPool(t, threads, PoolOptions{})
		for _, be := range backends {
			for _, typ := range X8Types {
				for _, rows := range []int{8, 13, 40, 67} {
					cols := 512
					m := randX8Matrix(t, r, typ, rows, cols)
					x, _ := RepackX8(make([]byte, len(m.Data)), m)
					m2 := randX8Matrix(t, r, typ, 16, cols)
					x2, _ := RepackX8(make([]byte, len(m2.Data)), m2)
					for _, nTok := range []int{1, 3, 4, 7, 9} {
						in := gaussRow(r, nTok*cols, 1)
						want, got := make([]float32, nTok*rows), make([]float32, nTok*rows)
						want2, got2 := make([]float32, nTok*16), make([]float32, nTok*16)
						GenericBackend().MatMulMany(p, in, nTok, MatMulOp{Out: want, W: m}, MatMulOp{Out: want2, W: m2})
						be.MatMulMany(p, in, nTok, MatMulOp{Out: got, W: x}, MatMulOp{Out: got2, W: x2})
						for i := range want {
							if !sameBits(got[i], want[i]) {
								t.Fatalf("%s %s t%d rows %d tokens %d: out[%d] x8 %v, rows %v", be.Name(), typ, threads, rows, nTok, i, got[i], want[i])
							}
						}
						for i := range want2 {
							if !sameBits(got2[i], want2[i]) {
								t.Fatalf("%s %s t%d second op: out[%d] x8 %v, rows %v", be.Name(), typ, threads, i, got2[i], want2[i])
							}
						}
					}
				}
			}
		}
	}
}

func BenchmarkX8Tile(b *testing.B) {
	for name, tiles := range x8Tiles() {
		for _, typ := range X8Types {
			for _, nTok := range []int{1, 4, 8} {
				b.Run(fmt.Sprintf("%s/%s/tok%d", name, typ, nTok), func(b *testing.B) {
					if name == "go" && nTok > 1 {
						b.Skip("slow")
					}
					const rows, cols = 5632, 2048
					r := rand.New(rand.NewPCG(5, 6))
					m := randX8Matrix(b, r, typ, rows, cols)
					x, _ := RepackX8(make([]byte, len(m.Data)), m)
					f := formats[typ]
					ab, _ := f.VecDotType.RowSize(cols)
					a := make([]byte, nTok*ab)
					for k := 0; k < nTok; k++ {
						copy(a[k*ab:], quantizeTo(b, f.VecDotType, gaussRow(r, cols, 1)))
					}
					out := make([]float32, nTok*rows)
					b.SetBytes(int64(len(x.Data)))
					for b.Loop() {
						tiles[typ](cols, x.Data, rows/8, a, ab, nTok, out, rows)
					}
				})
			}
		}
	}
}

func TestFMA32MatchesHardware(t *testing.T) {
	needAVX2(t)
	r := rand.New(rand.NewPCG(39, 40))
	cases := fmaHardCases(r, 50000)
	for i := 0; i < 200000; i++ {
		cases = append(cases, [3]float32{
			math.Float32frombits(r.Uint32()), math.Float32frombits(r.Uint32()), math.Float32frombits(r.Uint32())})
	}
	for _, c := range cases {
		got, want := fma32(c[0], c[1], c[2]), fmaAVX2(c[0], c[1], c[2])
		if isNaN32(want) && isNaN32(got) {
			continue
		}
		if !sameBits(got, want) {
			t.Fatalf("fma32(%g, %g, %g) = %g (%#08x), VFMADD231SS %g (%#08x)", c[0], c[1], c[2], got, math.Float32bits(got), want, math.Float32bits(want))
		}
	}
}

// BenchmarkX8TileDRAM: the decode kernel (one token) over 5632×2048
// matrices cycled through 192 MiB of copies, so that weights stream from
// memory as in a real model. MB/s counts weight bytes.
func BenchmarkX8TileDRAM(b *testing.B) {
	needAVX2(b)
	for _, typ := range X8Types {
		b.Run(typ.String(), func(b *testing.B) {
			const rows, cols = 5632, 2048
			r := rand.New(rand.NewPCG(5, 6))
			m := randX8Matrix(b, r, typ, rows, cols)
			x, _ := RepackX8(make([]byte, len(m.Data)), m)
			mats := make([][]byte, max(2, (192<<20)/len(x.Data)))
			for i := range mats {
				mats[i] = append([]byte(nil), x.Data...)
			}
			f := formats[typ]
			a := quantizeTo(b, f.VecDotType, gaussRow(r, cols, 1))
			out := make([]float32, rows)
			tile := avx2X8Tiles[typ]
			b.SetBytes(int64(len(x.Data)))
			i := 0
			for b.Loop() {
				tile(cols, mats[i%len(mats)], rows/8, a, len(a), 1, out, rows)
				i++
			}
		})
	}
}

// expInputs covers expVec's three paths: |n| ≤ 126, 126 < |n| ≤ 192 (the
// scaled path, subnormal results and overflow) and beyond, plus zeros.
func expInputs(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch i % 6 {
		case 0:
			x[i] = float32(r.NormFloat64() * 4)
		case 1:
			x[i] = float32(r.Float64()*200 - 100)
		case 2:
			x[i] = float32(87 + r.Float64()*50) // around the overflow edge
		case 3:
			x[i] = -float32(87 + r.Float64()*60) // subnormal results
		case 4:
			x[i] = float32(r.Float64()*400 - 200)
		default:
			x[i] = []float32{0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 88.72, -103.97, 1e30, -1e30}[r.IntN(8)]
		}
	}
	return x
}

func TestBackendOpsMatchGo(t *testing.T) {
	needAVX2(t)
	be, err := BackendByName(AVX2BackendName)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(41, 42))
	for _, n := range []int{1, 7, 8, 9, 64, 100, 768, 5632, 513 * 8} {
		for rep := 0; rep < 20; rep++ {
			gate, up := expInputs(r, n), gaussRow(r, n, 1)
			want, got := make([]float32, n), make([]float32, n)
			SwiGLU(want, gate, up)
			be.SwiGLU(got, gate, up)
			for i := range want {
				if !sameBits(got[i], want[i]) && !(isNaN32(got[i]) && isNaN32(want[i])) {
					t.Fatalf("SwiGLU n=%d: out[%d] (gate %g): avx2 %g (%#08x), go %g (%#08x)", n, i, gate[i], got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
				}
			}
			// In place, as the model calls it.
			inPlace := append([]float32(nil), gate...)
			be.SwiGLU(inPlace, inPlace, up)
			if i := firstDiff(F32Bytes(inPlace), F32Bytes(want)); i >= 0 {
				t.Fatalf("SwiGLU in place n=%d differs at byte %d", n, i)
			}
			x := expInputs(r, n)
			for i := range x {
				x[i] = float32(math.Mod(float64(x[i]), 60))
			}
			sw, sg := append([]float32(nil), x...), append([]float32(nil), x...)
			Softmax(sw, 0.125)
			be.Softmax(sg, 0.125)
			if i := firstDiff(F32Bytes(sg), F32Bytes(sw)); i >= 0 {
				t.Fatalf("Softmax n=%d: element %d: avx2 %g, go %g", n, i/4, sg[i/4], sw[i/4])
			}
		}
	}
	// expVec's every path, lane by lane, against the scalar twin.
	x := expInputs(r, 1<<16)
	e := append([]float32(nil), x...)
	avx2ExpSub(e, 0)
	for i := range x {
		if want := expVec(x[i]); !sameBits(e[i], want) {
			t.Fatalf("expVec(%g): avx2 %g (%#08x), go %g (%#08x)", x[i], e[i], math.Float32bits(e[i]), want, math.Float32bits(want))
		}
	}
}

func BenchmarkSwiGLU(b *testing.B) {
	be, _ := BackendByName("")
	r := rand.New(rand.NewPCG(1, 2))
	gate, up := gaussRow(r, 768, 1), gaussRow(r, 768, 1)
	out := make([]float32, 768)
	b.SetBytes(768 * 4)
	for b.Loop() {
		be.SwiGLU(out, gate, up)
	}
}

func BenchmarkRepackX8(b *testing.B) {
	for _, typ := range X8Types {
		b.Run(typ.String(), func(b *testing.B) {
			r := rand.New(rand.NewPCG(7, 8))
			m := randX8Matrix(b, r, typ, 256, 2048)
			dst := make([]byte, len(m.Data))
			b.SetBytes(int64(len(m.Data)))
			for b.Loop() {
				RepackX8Rows(dst, m, 0, m.Rows/8)
			}
		})
	}
}
