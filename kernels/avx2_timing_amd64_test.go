package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"
)

// Timing reports that hold up on a shared, noisy machine (where `go test
// -bench` swings by 2×): each takes the minimum over many short trials.
// They only log, and run only with LLM_KERNEL_TIMING=1:
//
//	LLM_KERNEL_TIMING=1 go test -run AVX2Timing -v ./kernels/

func timingReport(t *testing.T) {
	t.Helper()
	if os.Getenv("LLM_KERNEL_TIMING") == "" {
		t.Skip("set LLM_KERNEL_TIMING=1 for the timing report")
	}
	needAVX2(t)
}

// minTime returns the minimum time of one call of f over many trials.
func minTime(f func(), inner int) float64 {
	best := time.Duration(1 << 62)
	for trial := 0; trial < 300; trial++ {
		t := time.Now()
		for i := 0; i < inner; i++ {
			f()
		}
		if d := time.Since(t); d < best {
			best = d
		}
	}
	return float64(best) / float64(inner)
}

func TestAVX2TimingReport(t *testing.T) {
	timingReport(t)
	r := rand.New(rand.NewPCG(3, 4))
	const n = 4096
	var lines []string
	for _, typ := range []Type{Q4_K, Q6_K, Q8_0, Q5_0, F32, F16, BF16} {
		f, _ := FormatOf(typ)
		wq := quantizeTo(t, typ, gaussRow(r, n, 0.02))
		aq := quantizeTo(t, f.VecDotType, gaussRow(r, n, 1))
		g := minTime(func() { sinkF32 += f.Dot(n, wq, aq) }, 5)
		a := minTime(func() { sinkF32 += avx2Dots[typ](n, wq, aq) }, 50)
		lines = append(lines, fmt.Sprintf("%-5s go %8.0f ns %6.2f GB/s   avx2 %7.1f ns %6.2f GB/s  x%.1f", typ, g, float64(len(wq))/g, a, float64(len(wq))/a, g/a))
	}
	sort.Strings(lines)
	x := gaussRow(r, n, 1)
	for _, typ := range []Type{Q8_K, Q8_0, F16} {
		size, _ := typ.RowSize(n)
		q := make([]byte, size)
		ref := GenericBackend().acts[typ]
		if ref == nil {
			f, _ := FormatOf(typ)
			ref = f.Quantize
		}
		g := minTime(func() { ref(q, x) }, 5)
		a := minTime(func() { avx2Activations[typ](q, x) }, 50)
		lines = append(lines, fmt.Sprintf("to %-5s go %8.0f ns  avx2 %7.1f ns  x%.1f  (%d floats)", typ, g, a, g/a, n))
	}
	for _, l := range lines {
		t.Log(l)
	}
}

func TestAVX2TimingTiles(t *testing.T) {
	timingReport(t)
	r := rand.New(rand.NewPCG(3, 4))
	const cols, rows = 2048, 256
	for _, typ := range []Type{Q4_K, Q6_K, Q8_0, Q5_0} {
		for _, nTok := range []int{1, 4, 16} {
			f, _ := FormatOf(typ)
			rb, _ := typ.RowSize(cols)
			ab, _ := f.VecDotType.RowSize(cols)
			w := make([]byte, rows*rb)
			for i := 0; i < rows; i++ {
				copy(w[i*rb:], quantizeTo(t, typ, gaussRow(r, cols, 0.02)))
			}
			a := make([]byte, nTok*ab)
			for j := 0; j < nTok; j++ {
				copy(a[j*ab:], quantizeTo(t, f.VecDotType, gaussRow(r, cols, 1)))
			}
			out := make([]float32, nTok*rows)
			dot, tile := avx2Dots[typ], avx2Tiles[typ]
			d := minTime(func() {
				for i := 0; i < rows; i++ {
					for j := 0; j < nTok; j++ {
						out[j*rows+i] = dot(cols, w[i*rb:(i+1)*rb], a[j*ab:(j+1)*ab])
					}
				}
			}, 1)
			tl := minTime(func() { tile(cols, w, rb, rows, a, ab, nTok, out, rows) }, 1)
			t.Logf("%-5s nTok=%2d dots %7.1f ns/row·tok  tile %7.1f ns/row·tok  (%.2fx)  tile %.2f GB/s·tok", typ, nTok, d/rows/float64(nTok), tl/rows/float64(nTok), d/tl, float64(len(w))*float64(nTok)/tl)
		}
	}
}

func TestAVX2TimingMatVecDRAM(t *testing.T) {
	timingReport(t)
	r := rand.New(rand.NewPCG(3, 4))
	const cols, rows = 2048, 5632
	for _, typ := range []Type{Q4_K, Q6_K, Q8_0, F16} {
		f, _ := FormatOf(typ)
		rb, _ := typ.RowSize(cols)
		one := make([]byte, rows*rb)
		for i := 0; i < rows; i++ {
			if i < 64 {
				copy(one[i*rb:], quantizeTo(t, typ, gaussRow(r, cols, 0.02)))
			} else {
				copy(one[i*rb:(i+1)*rb], one[(i%64)*rb:])
			}
		}
		ncopy := max(2, (128<<20)/len(one))
		mats := make([][]byte, ncopy)
		for i := range mats {
			mats[i] = append([]byte(nil), one...)
		}
		a := quantizeTo(t, f.VecDotType, gaussRow(r, cols, 1))
		out := make([]float32, rows)
		tile := avx2Tiles[typ]
		k := 0
		best := 1e18
		for trial := 0; trial < 40; trial++ {
			st := time.Now()
			tile(cols, mats[k%ncopy], rb, rows, a, 0, 1, out, rows)
			k++
			if d := float64(time.Since(st)); d < best {
				best = d
			}
		}
		l3 := minTime(func() { tile(cols, one, rb, rows, a, 0, 1, out, rows) }, 1)
		t.Logf("%-5s matvec %dx%d: dram %.2f GB/s  (warm L3: %.2f GB/s)", typ, rows, cols, float64(len(one))/best, float64(len(one))/l3)
	}
}
