package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// mmRandRow returns n floats of a smooth-ish random distribution.
func mmRandRow(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// mmRandMatrix quantizes a random rows×cols matrix to t.
func mmRandMatrix(t testing.TB, r *rand.Rand, typ Type, rows, cols int) *Matrix {
	t.Helper()
	rb, err := typ.RowSize(cols)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, rows*rb)
	for i := 0; i < rows; i++ {
		if err := QuantizeRow(typ, data[i*rb:(i+1)*rb], mmRandRow(r, cols)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := NewMatrix(typ, rows, cols, data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// mmReference computes the product the slow way: one activation conversion
// per token and one dot per (row, token), with the backend's kernels.
func mmReference(t testing.TB, b *Backend, w *Matrix, x []float32, nTok int) []float32 {
	t.Helper()
	k, err := b.kernel(w.Type)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, nTok*w.Rows)
	for tok := 0; tok < nTok; tok++ {
		xt := x[tok*w.Cols : (tok+1)*w.Cols]
		var a []byte
		if k.act == nil {
			a = F32Bytes(xt)
		} else {
			sz, _ := k.vecDot.RowSize(w.Cols)
			a = make([]byte, sz)
			k.act(a, xt)
		}
		for r := 0; r < w.Rows; r++ {
			out[tok*w.Rows+r] = k.dot(w.Cols, w.Row(r), a)
		}
	}
	return out
}

var mmTypes = []Type{F32, F16, BF16, Q8_0, Q5_0, Q4_K, Q6_K}

func sameF32Bits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestMatMulBitExact: MatMul equals one dot per element, for every type, any
// thread count, batch size, inner/outer dispatch and MatMulMany grouping;
// and it approximates the float64 product of the dequantized weights.
func TestMatMulBitExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pools := []*Pool{newTestPool(t, 1, PoolOptions{}), newTestPool(t, 2, PoolOptions{}), newTestPool(t, 3, PoolOptions{})}
	for _, b := range []*Backend{GenericBackend(), mustBackend(t, "")} {
		for _, typ := range mmTypes {
			if b.Supports(typ) != nil {
				t.Logf("%s: %s not available yet", b.Name(), typ)
				continue
			}
			cols := 512
			w := mmRandMatrix(t, r, typ, 37, cols)
			w2 := mmRandMatrix(t, r, typ, 5, cols)
			x := mmRandRow(r, 5*cols)
			for _, nTok := range []int{1, 2, 5} {
				want := mmReference(t, b, w, x, nTok)
				want2 := mmReference(t, b, w2, x, nTok)
				for _, p := range pools {
					got := make([]float32, nTok*w.Rows)
					b.MatMul(p, got, w, x, nTok)
					if !sameF32Bits(got, want) {
						t.Fatalf("%s %s nTok=%d threads=%d: MatMul differs from per-element dots", b.Name(), typ, nTok, p.Threads())
					}
					got1, got2 := make([]float32, nTok*w.Rows), make([]float32, nTok*w2.Rows)
					p.Exec(func(ip *Pool) {
						b.MatMulMany(ip, x, nTok, MatMulOp{Out: got1, W: w}, MatMulOp{Out: got2, W: w2})
					})
					if !sameF32Bits(got1, want) || !sameF32Bits(got2, want2) {
						t.Fatalf("%s %s nTok=%d threads=%d: MatMulMany in Exec differs", b.Name(), typ, nTok, p.Threads())
					}
				}
				// accuracy against float64
				deq := make([]float32, w.Rows*w.Cols)
				if err := Dequantize(deq, w); err != nil {
					t.Fatal(err)
				}
				for tok := 0; tok < nTok; tok++ {
					for row := 0; row < w.Rows; row++ {
						var s, mag float64
						for c := 0; c < cols; c++ {
							v := float64(deq[row*cols+c]) * float64(x[tok*cols+c])
							s += v
							mag += math.Abs(v)
						}
						tol := 1e-5 * mag
						switch typ {
						case F16, BF16, Q8_0, Q5_0:
							tol = 2e-2 * mag // activations rounded to 8-16 bits
						case Q4_K, Q6_K:
							tol = 2e-2 * mag
						}
						if d := math.Abs(float64(want[tok*w.Rows+row]) - s); d > tol {
							t.Fatalf("%s row %d: %v vs float64 %v", typ, row, want[tok*w.Rows+row], s)
						}
					}
				}
			}
		}
	}
}

func mustBackend(t testing.TB, name string) *Backend {
	b, err := BackendByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMatMulMixedVecDotTypes(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	p := newTestPool(t, 2, PoolOptions{})
	b := GenericBackend()
	var types []Type
	for _, typ := range []Type{F32, F16, Q8_0} {
		if b.Supports(typ) == nil {
			types = append(types, typ)
		}
	}
	var ops []MatMulOp
	var want [][]float32
	x := mmRandRow(r, 3*256)
	for i, typ := range append(types, types...) {
		w := mmRandMatrix(t, r, typ, 7+i, 256)
		ops = append(ops, MatMulOp{Out: make([]float32, 3*w.Rows), W: w})
		want = append(want, mmReference(t, b, w, x, 3))
	}
	b.MatMulMany(p, x, 3, ops...)
	for i := range ops {
		if !sameF32Bits(ops[i].Out, want[i]) {
			t.Fatalf("op %d (%s) differs", i, ops[i].W.Type)
		}
	}
}

func TestMatMulAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	p := newTestPool(t, 2, PoolOptions{})
	b := GenericBackend()
	for _, typ := range []Type{F32, Q8_0} {
		if b.Supports(typ) != nil {
			continue
		}
		w := mmRandMatrix(t, r, typ, 64, 256)
		x := mmRandRow(r, 4*256)
		out := make([]float32, 4*64)
		b.MatMul(p, out, w, x, 4)
		body := func(ip *Pool) { b.MatMul(ip, out, w, x, 4) }
		if a := testing.AllocsPerRun(20, func() { b.MatMul(p, out, w, x, 4); p.Exec(body) }); a != 0 {
			t.Errorf("%s: %v allocations per MatMul", typ, a)
		}
	}
}

func TestMatMulPanics(t *testing.T) {
	p := newTestPool(t, 1, PoolOptions{})
	w, _ := NewMatrix(F32, 2, 4, make([]byte, 32))
	for name, f := range map[string]func(){
		"short x":   func() { GenericBackend().MatMul(p, make([]float32, 2), w, make([]float32, 3), 1) },
		"short out": func() { GenericBackend().MatMul(p, make([]float32, 1), w, make([]float32, 4), 1) },
		"cols": func() {
			w2, _ := NewMatrix(F32, 2, 8, make([]byte, 64))
			GenericBackend().MatMulMany(p, make([]float32, 8), 1, MatMulOp{make([]float32, 2), w}, MatMulOp{make([]float32, 2), w2})
		},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	if _, err := NewMatrix(F32, 2, 4, make([]byte, 31)); err == nil {
		t.Error("NewMatrix accepted a short buffer")
	}
	if _, err := NewMatrix(Q8_0, 2, 40, make([]byte, 100)); err == nil {
		t.Error("NewMatrix accepted a partial block")
	}
}

func TestBackendRegistry(t *testing.T) {
	var calls atomic.Int64
	name := fmt.Sprintf("test-counting-%d", rand.Int())
	b, err := RegisterBackend(BackendSpec{Name: name, Priority: -5, Dots: map[Type]DotFunc{
		F32: func(n int, w, a []byte) float32 { calls.Add(1); return dotF32(n, w, a) },
	}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Name() != name {
		t.Fatal(b.Name())
	}
	if _, err := RegisterBackend(BackendSpec{Name: name}); err == nil {
		t.Error("duplicate backend accepted")
	}
	if got, _ := BackendByName(name); got != b {
		t.Error("BackendByName did not find it")
	}
	if _, err := BackendByName("no-such"); err == nil {
		t.Error("unknown backend accepted")
	}
	if best, _ := BackendByName(""); best == b {
		t.Error("a low-priority backend became the default")
	}
	names := AvailableBackends()
	if names[len(names)-1] != name {
		t.Errorf("AvailableBackends %v: lowest priority not last", names)
	}
	p := newTestPool(t, 2, PoolOptions{})
	r := rand.New(rand.NewPCG(7, 8))
	w := mmRandMatrix(t, r, F32, 10, 64)
	x := mmRandRow(r, 3*64)
	out := make([]float32, 30)
	b.MatMul(p, out, w, x, 3)
	if calls.Load() != 30 {
		t.Errorf("override called %d times, want 30", calls.Load())
	}
	if !sameF32Bits(out, mmReference(t, GenericBackend(), w, x, 3)) {
		t.Error("override backend result differs")
	}
	if err := b.Supports(Type(999)); err == nil {
		t.Error("unknown type supported")
	}
}

func TestGetRowDequantize(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, typ := range mmTypes {
		if _, err := FormatOf(typ); err != nil {
			continue
		}
		w := mmRandMatrix(t, r, typ, 6, 256)
		all := make([]float32, 6*256)
		if err := Dequantize(all, w); err != nil {
			t.Fatal(err)
		}
		row := make([]float32, 256)
		for i := 0; i < 6; i++ {
			if err := GetRow(row, w, i); err != nil {
				t.Fatal(err)
			}
			if !sameF32Bits(row, all[i*256:(i+1)*256]) {
				t.Fatalf("%s: GetRow(%d) differs from Dequantize", typ, i)
			}
		}
		if GetRow(row, w, 6) == nil || GetRow(row[:10], w, 0) == nil {
			t.Errorf("%s: GetRow accepted a bad row or short buffer", typ)
		}
	}
}

// BenchmarkMatMul: decode-shaped (1 token) and prompt-shaped (64 tokens)
// products of synth-256's FFN shape (768×256) and a 2048×2048 layer.
func BenchmarkMatMul(b *testing.B) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, be := range []*Backend{GenericBackend(), mustBackend(b, "")} {
		for _, typ := range []Type{F32, Q8_0, Q4_K} {
			if be.Supports(typ) != nil {
				continue
			}
			for _, shape := range [][2]int{{768, 256}, {2048, 2048}} {
				w := mmRandMatrix(b, r, typ, shape[0], shape[1])
				for _, nTok := range []int{1, 64} {
					x := mmRandRow(r, nTok*shape[1])
					out := make([]float32, nTok*shape[0])
					for _, threads := range []int{1, 2} {
						p := newTestPool(b, threads, PoolOptions{})
						b.Run(fmt.Sprintf("%s/%s/%dx%d/tok%d/t%d", be.Name(), typ, shape[0], shape[1], nTok, threads), func(b *testing.B) {
							b.SetBytes(int64(len(w.Data)))
							for b.Loop() {
								be.MatMul(p, out, w, x, nTok)
							}
						})
					}
				}
			}
		}
		if be == GenericBackend() && be == mustBackend(b, "") {
			break
		}
	}
}
