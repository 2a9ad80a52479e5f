package kernels

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// ---------------------------------------------------------------------------
// Reference data from llama.cpp (shared/reference/dequant).

// sharedDir finds the shared reference folder: $LLM_ENGINE_SHARED, else
// ../shared from the repository root (the directory holding go.mod).
func sharedDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("LLM_ENGINE_SHARED"); d != "" {
		if _, err := os.Stat(d); err == nil {
			return d
		}
		t.Skipf("!!!!! LLM_ENGINE_SHARED=%s does not exist: llama.cpp reference checks SKIPPED !!!!!", d)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			sh := filepath.Join(dir, "..", "shared")
			if _, err := os.Stat(filepath.Join(sh, "reference", "dequant", "index.json")); err == nil {
				return sh
			}
			break
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	t.Skip("!!!!! shared reference data not found (set LLM_ENGINE_SHARED or place it at ../shared from the repo root): llama.cpp byte-exactness checks SKIPPED !!!!!")
	return ""
}

type refTensor struct {
	Model         string `json:"-"`
	Name          string `json:"-"`
	Type          string `json:"type"`
	Ne            []int  `json:"ne"`
	NElements     int    `json:"n_elements"`
	QuantBytes    int    `json:"quant_bytes"`
	QuantFile     string `json:"quant_file"`
	QuantSHA256   string `json:"quant_sha256"`
	DequantFile   string `json:"dequant_file"`
	DequantSHA256 string `json:"dequant_sha256"`
	SourceModel   string `json:"source_model"`
	SourceOffset  int64  `json:"source_tensor_file_offset"`
	SourceSHA256  string `json:"source_sha256"`
}

var (
	refOnce    sync.Once
	refList    []refTensor
	refErr     error
	modelMu    sync.Mutex
	modelCache = map[string][]byte{}
)

func loadRefIndex(t testing.TB) (string, []refTensor) {
	t.Helper()
	sh := sharedDir(t)
	refOnce.Do(func() {
		raw, err := os.ReadFile(filepath.Join(sh, "reference", "dequant", "index.json"))
		if err != nil {
			refErr = err
			return
		}
		// Top level: model name -> {"model", "tensors"}; keys starting with
		// '_' (such as "_layout") are notes.
		var top map[string]json.RawMessage
		if err := json.Unmarshal(raw, &top); err != nil {
			refErr = err
			return
		}
		for model, msg := range top {
			if strings.HasPrefix(model, "_") {
				continue
			}
			var m struct {
				Tensors map[string]refTensor `json:"tensors"`
			}
			if err := json.Unmarshal(msg, &m); err != nil {
				refErr = fmt.Errorf("%s: %w", model, err)
				return
			}
			for name, e := range m.Tensors {
				e.Model, e.Name = model, name
				refList = append(refList, e)
			}
		}
		sort.Slice(refList, func(i, j int) bool {
			if refList[i].Model != refList[j].Model {
				return refList[i].Model < refList[j].Model
			}
			return refList[i].Name < refList[j].Name
		})
	})
	if refErr != nil {
		t.Fatalf("reading reference index: %v", refErr)
	}
	return sh, refList
}

func readModel(t testing.TB, path string) []byte {
	t.Helper()
	modelMu.Lock()
	defer modelMu.Unlock()
	if b, ok := modelCache[path]; ok {
		return b
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	modelCache[path] = b
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func bytesToF32(b []byte) []float32 {
	f := make([]float32, len(b)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return f
}

// runReference checks every reference tensor of type typ: our quantizer must
// reproduce llama.cpp's bytes exactly, and our dequantizer its floats bit for
// bit.
func runReference(t *testing.T, typ Type) {
	sh, list := loadRefIndex(t)
	found := 0
	for _, e := range list {
		if e.Type != typ.String() {
			continue
		}
		found++
		t.Run(e.Model+"/"+e.Name, func(t *testing.T) {
			dir := filepath.Join(sh, "reference", "dequant", e.Model)
			model := readModel(t, filepath.Join(sh, e.SourceModel))
			end := e.SourceOffset + 4*int64(e.NElements)
			if end > int64(len(model)) {
				t.Fatalf("source tensor [%d, %d) beyond %s (%d bytes)", e.SourceOffset, end, e.SourceModel, len(model))
			}
			srcBytes := model[e.SourceOffset:end]
			if got := sha256Hex(srcBytes); got != e.SourceSHA256 {
				t.Fatalf("source tensor sha256 %s, index says %s", got, e.SourceSHA256)
			}
			want, err := os.ReadFile(filepath.Join(dir, e.QuantFile))
			if err != nil {
				t.Fatal(err)
			}
			if got := sha256Hex(want); got != e.QuantSHA256 {
				t.Fatalf("%s sha256 %s, index says %s", e.QuantFile, got, e.QuantSHA256)
			}
			wantDeq, err := os.ReadFile(filepath.Join(dir, e.DequantFile))
			if err != nil {
				t.Fatal(err)
			}
			if got := sha256Hex(wantDeq); got != e.DequantSHA256 {
				t.Fatalf("%s sha256 %s, index says %s", e.DequantFile, got, e.DequantSHA256)
			}

			src := bytesToF32(srcBytes)
			rowLen := e.Ne[0]
			rowSize, err := typ.RowSize(rowLen)
			if err != nil {
				t.Fatal(err)
			}
			nrows := e.NElements / rowLen
			if nrows*rowSize != len(want) || len(want) != e.QuantBytes {
				t.Fatalf("size mismatch: %d rows x %d bytes vs %d bytes", nrows, rowSize, len(want))
			}
			got := make([]byte, len(want))
			for r := 0; r < nrows; r++ {
				if err := QuantizeRow(typ, got[r*rowSize:(r+1)*rowSize], src[r*rowLen:(r+1)*rowLen]); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, want) {
				bs := typ.TypeSize()
				bad := 0
				first := -1
				for b := 0; b < len(want)/bs; b++ {
					if !bytes.Equal(got[b*bs:(b+1)*bs], want[b*bs:(b+1)*bs]) {
						if first < 0 {
							first = b
						}
						bad++
					}
				}
				t.Fatalf("quantized bytes differ from llama.cpp in %d of %d blocks; first block %d:\n got %x\nwant %x",
					bad, len(want)/bs, first, got[first*bs:(first+1)*bs], want[first*bs:(first+1)*bs])
			}

			deq := make([]float32, e.NElements)
			for r := 0; r < nrows; r++ {
				if err := DequantizeRow(typ, deq[r*rowLen:(r+1)*rowLen], want[r*rowSize:(r+1)*rowSize]); err != nil {
					t.Fatal(err)
				}
			}
			wantF := bytesToF32(wantDeq)
			for i := range wantF {
				if math.Float32bits(deq[i]) != math.Float32bits(wantF[i]) {
					t.Fatalf("dequantized element %d = %v (%#x), llama.cpp %v (%#x)", i, deq[i], math.Float32bits(deq[i]), wantF[i], math.Float32bits(wantF[i]))
				}
			}
		})
	}
	if found == 0 {
		t.Logf("no reference tensors of type %s", typ)
	}
}

// TestReferenceIndexCoversTypes guards against the reference folder silently
// losing types: every entry must be of a type we check.
func TestReferenceIndexCoversTypes(t *testing.T) {
	_, list := loadRefIndex(t)
	if len(list) != 26 {
		t.Errorf("index lists %d tensors, expected 26", len(list))
	}
	seen := map[string]int{}
	for _, e := range list {
		seen[e.Type]++
		if _, ok := ParseType(e.Type); !ok {
			t.Errorf("%s/%s: unknown type %s", e.Model, e.Name, e.Type)
		}
	}
	for _, want := range []string{"Q8_0", "Q5_0", "Q4_K", "Q6_K", "F16"} {
		if seen[want] == 0 {
			t.Errorf("no reference tensors of type %s", want)
		}
	}
	t.Logf("reference tensors per type: %v", seen)
}

func TestF16Reference(t *testing.T) { runReference(t, F16) }

// ---------------------------------------------------------------------------
// Test data generators.

func gaussRow(r *rand.Rand, n int, sigma float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * sigma)
	}
	return x
}

// testRows returns named rows of length n exercising ordinary and edge inputs.
func testRows(r *rand.Rand, n int) map[string][]float32 {
	rows := map[string][]float32{}
	rows["gauss"] = gaussRow(r, n, 1)
	rows["gauss-small"] = gaussRow(r, n, 0.02)
	u := make([]float32, n)
	for i := range u {
		u[i] = float32(r.Float64()*2 - 1)
	}
	rows["uniform"] = u
	pos := make([]float32, n)
	for i := range pos {
		pos[i] = float32(r.Float64()*3 + 0.5)
	}
	rows["positive-offset"] = pos
	rows["zero"] = make([]float32, n)
	big := make([]float32, n)
	for i := range big {
		if r.IntN(2) == 0 {
			big[i] = 65504
		} else {
			big[i] = -65504
		}
		if i%7 == 3 {
			big[i] = float32(r.NormFloat64() * 1000)
		}
	}
	rows["pm65504"] = big
	tiny := make([]float32, n)
	for i := range tiny {
		tiny[i] = float32(r.NormFloat64() * 1e-8)
	}
	rows["tiny1e-8"] = tiny
	mixed := gaussRow(r, n, 1)
	for i := range mixed {
		switch (i / 32) % 4 {
		case 1:
			mixed[i] = 0 // all-zero blocks between ordinary ones
		case 2:
			mixed[i] *= 1e-8
		case 3:
			if i%32 == 5 {
				mixed[i] = 300 // outlier
			}
		}
	}
	rows["mixed-blocks"] = mixed
	return rows
}

// ---------------------------------------------------------------------------
// Dot-product checking against float64.

// dotMagnitude returns Σ|w_i a_i| (plus, for Q4_K, Σ|a_i|·dmin·m of the
// sub-block, the size of the min term the kernel subtracts separately).
func dotMagnitude(t Type, wq []byte, wd, ad []float32) float64 {
	var s float64
	for i := range wd {
		s += math.Abs(float64(wd[i]) * float64(ad[i]))
	}
	if t == Q4_K {
		for b := 0; b < len(wd)/QK_K; b++ {
			x := (*[blockQ4_KSize]byte)(wq[b*blockQ4_KSize:])
			dmin := float64(fp16At(x[2:4]))
			for j := 0; j < 8; j++ {
				_, m := scaleMinK4(j, (*[12]byte)(x[4:16]))
				for e := 0; e < 32; e++ {
					s += math.Abs(float64(ad[b*QK_K+32*j+e])) * dmin * float64(m)
				}
			}
		}
	}
	return s
}

// checkDot quantizes w (to t) and a (to t's VecDotType), and compares Dot with
// the float64 dot of the two dequantized rows.
func checkDot(tb testing.TB, t Type, w, a []float32) (got float32, ref float64) {
	tb.Helper()
	f, err := FormatOf(t)
	if err != nil {
		tb.Fatal(err)
	}
	wq := quantizeTo(tb, t, w)
	aq := quantizeTo(tb, f.VecDotType, a)
	return checkDotQ(tb, t, wq, aq, dequantizeFrom(tb, t, wq, len(w)), dequantizeFrom(tb, f.VecDotType, aq, len(a)))
}

// checkDotQ compares Dot on quantized rows with the float64 dot of their
// dequantizations wd, ad. The tolerance is relative to the sum of |products|:
// at most (n/8+16) float32 roundings of it, which bounds the longest addition
// chain of every kernel here.
func checkDotQ(tb testing.TB, t Type, wq, aq []byte, wd, ad []float32) (got float32, ref float64) {
	tb.Helper()
	f, _ := FormatOf(t)
	n := len(wd)
	for i := range wd {
		ref += float64(wd[i]) * float64(ad[i])
	}
	got = f.Dot(n, wq, aq)
	mag := dotMagnitude(t, wq, wd, ad)
	tol := float64(n/8+16)*0x1p-24*mag + 1e-30
	if math.IsNaN(float64(got)) || math.Abs(float64(got)-ref) > tol {
		tb.Errorf("%s dot n=%d: got %v, float64 reference %v, |diff| %g > tol %g (Σ|p| = %g)", t, n, got, ref, math.Abs(float64(got)-ref), tol, mag)
	}
	// Determinism: same inputs, same bits.
	if again := f.Dot(n, wq, aq); math.Float32bits(again) != math.Float32bits(got) {
		tb.Errorf("%s dot not deterministic: %v then %v", t, got, again)
	}
	return got, ref
}

func quantizeTo(tb testing.TB, t Type, x []float32) []byte {
	tb.Helper()
	size, err := t.RowSize(len(x))
	if err != nil {
		tb.Fatal(err)
	}
	q := make([]byte, size)
	if err := QuantizeRow(t, q, x); err != nil {
		tb.Fatal(err)
	}
	return q
}

func dequantizeFrom(tb testing.TB, t Type, q []byte, n int) []float32 {
	tb.Helper()
	d := make([]float32, n)
	if err := DequantizeRow(t, d, q); err != nil {
		tb.Fatal(err)
	}
	return d
}

// runDotTests runs checkDotQ over the edge rows for several lengths, each
// row quantized once.
func runDotTests(t *testing.T, typ Type, sizes []int) {
	r := rand.New(rand.NewPCG(uint64(typ), 42))
	f, _ := FormatOf(typ)
	type qrow struct {
		q []byte
		d []float32
	}
	prep := func(tt Type, rows map[string][]float32) map[string]qrow {
		out := map[string]qrow{}
		for k, x := range rows {
			q := quantizeTo(t, tt, x)
			out[k] = qrow{q, dequantizeFrom(t, tt, q, len(x))}
		}
		return out
	}
	for _, n := range sizes {
		ws := prep(typ, testRows(r, n))
		as := prep(f.VecDotType, testRows(r, n))
		names := make([]string, 0, len(ws))
		for k := range ws {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, wn := range names {
			for _, an := range []string{"gauss", "uniform", "zero", "pm65504", "tiny1e-8", "mixed-blocks", "positive-offset"} {
				t.Run(fmt.Sprintf("n%d/%s·%s", n, wn, an), func(t *testing.T) {
					checkDotQ(t, typ, ws[wn].q, as[an].q, ws[wn].d, as[an].d)
				})
			}
		}
	}
}

// TestDotEdgeCases: single blocks of extreme or degenerate content, for every
// format with a dot product.
func TestDotEdgeCases(t *testing.T) {
	for _, typ := range []Type{F32, F16, BF16, Q8_0, Q5_0, Q4_K, Q6_K} {
		n := max(typ.BlockSize(), 32)
		fill := func(v func(i int) float32) []float32 {
			x := make([]float32, n)
			for i := range x {
				x[i] = v(i)
			}
			return x
		}
		rows := map[string][]float32{
			"zero":      fill(func(int) float32 { return 0 }),
			"max":       fill(func(int) float32 { return 65504 }),
			"alt-max":   fill(func(i int) float32 { return float32(1-2*(i%2)) * 65504 }),
			"one-hot":   fill(func(i int) float32 { return float32(b2f(i == 5)) * 3 }),
			"tiny":      fill(func(i int) float32 { return 1e-8 * float32(i%7-3) }),
			"neg-const": fill(func(int) float32 { return -0.25 }),
		}
		for wn, w := range rows {
			for an, a := range rows {
				got, _ := checkDot(t, typ, w, a)
				if (wn == "zero" || an == "zero") && got != 0 {
					t.Errorf("%s %s·%s = %v, want 0", typ, wn, an, got)
				}
			}
		}
	}
}

func b2f(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ---------------------------------------------------------------------------
// Round-trip error.

type roundTripStats struct {
	maxAbs, rmsRel float64
}

func roundTrip(tb testing.TB, t Type, x []float32) ([]float32, roundTripStats) {
	tb.Helper()
	q := quantizeTo(tb, t, x)
	d := dequantizeFrom(tb, t, q, len(x))
	var st roundTripStats
	var se, sx float64
	for i := range x {
		e := math.Abs(float64(d[i]) - float64(x[i]))
		st.maxAbs = math.Max(st.maxAbs, e)
		se += e * e
		sx += float64(x[i]) * float64(x[i])
	}
	if sx > 0 {
		st.rmsRel = math.Sqrt(se / sx)
	}
	// Re-quantizing what we dequantized must not move (much): the levels
	// are representable. Checked loosely per type in the callers.
	return d, st
}

// ---------------------------------------------------------------------------
// Spec models: literal transcriptions of the documented accumulation orders,
// written independently of the kernels (decode everything first, then follow
// the comment), so that the comments the assembly author reads are exactly
// what the kernels compute.

func specHsum8(a [8]float32) float32 {
	r := [4]float32{}
	for j := 0; j < 4; j++ {
		r[j] = a[j] + a[j+4]
	}
	return (r[0] + r[2]) + (r[1] + r[3])
}

func specFloatDot(x, y []float32) float32 {
	n := len(x)
	var V [4][8]float32
	for g := 0; g < n/32; g++ {
		for k := 0; k < 4; k++ {
			for j := 0; j < 8; j++ {
				i := 32*g + 8*k + j
				p := float32(x[i] * y[i]) // conversion: a rounding point, no FMA
				V[k][j] = V[k][j] + p
			}
		}
	}
	var W [8]float32
	for j := 0; j < 8; j++ {
		W[j] = (V[0][j] + V[2][j]) + (V[1][j] + V[3][j])
	}
	var tt [4]float32
	for j := 0; j < 4; j++ {
		tt[j] = W[j] + W[j+4]
	}
	s := (tt[0] + tt[1]) + (tt[2] + tt[3])
	for i := 32 * (n / 32); i < n; i++ {
		p := float32(x[i] * y[i])
		s = s + p
	}
	return s
}

func TestFloatFormatsSpecModel(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, typ := range []Type{F32, F16, BF16} {
		f, _ := FormatOf(typ)
		for _, n := range []int{0, 1, 7, 31, 32, 33, 64, 100, 172, 4096, 4097} {
			x := gaussRow(r, n, 1)
			y := gaussRow(r, n, 3)
			xq, yq := quantizeTo(t, typ, x), quantizeTo(t, typ, y)
			xd, yd := dequantizeFrom(t, typ, xq, n), dequantizeFrom(t, typ, yq, n)
			got := f.Dot(n, xq, yq)
			want := specFloatDot(xd, yd)
			if math.Float32bits(got) != math.Float32bits(want) {
				t.Errorf("%s n=%d: Dot %v, spec model %v", typ, n, got, want)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Float formats.

func TestFloatFormatsDot(t *testing.T) {
	for _, typ := range []Type{F32, F16, BF16} {
		t.Run(typ.String(), func(t *testing.T) {
			runDotTests(t, typ, []int{1, 31, 32, 33, 172, 256, 4096, 4097})
		})
	}
}

func TestFloatFormatsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	x := gaussRow(r, 4096, 1)
	x = append(x, 0, -0.0, 65504, -65504, 1e-8, 6e-8, 3e38, -1e-40)
	for _, typ := range []Type{F32, F16, BF16} {
		q := quantizeTo(t, typ, x)
		d := dequantizeFrom(t, typ, q, len(x))
		for i, v := range x {
			var want float32
			switch typ {
			case F32:
				want = v
			case F16:
				want = FP16ToFP32(FP32ToFP16(v))
			case BF16:
				want = BF16ToFP32(FP32ToBF16(v))
			}
			if math.Float32bits(d[i]) != math.Float32bits(want) {
				t.Fatalf("%s: element %d (%v) round-trips to %v, want %v", typ, i, v, d[i], want)
			}
			// Relative error bound of the format (normal range).
			if av := math.Abs(float64(v)); typ != F32 && av > 1e-4 && av < 6e4 {
				rel := math.Abs(float64(d[i])-float64(v)) / av
				bound := 0x1p-11
				if typ == BF16 {
					bound = 0x1p-8
				}
				if rel > bound {
					t.Fatalf("%s: element %d (%v) relative error %g > %g", typ, i, v, rel, bound)
				}
			}
		}
	}
}

func TestFP16TableMatchesFP16ToFP32(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		if math.Float32bits(fp16Table[i]) != math.Float32bits(FP16ToFP32(uint16(i))) {
			t.Fatalf("table[%#x] differs", i)
		}
	}
}

func TestNearestInt(t *testing.T) {
	cases := []struct {
		f    float32
		want int32
	}{
		{0, 0}, {0.5, 0}, {1.5, 2}, {2.5, 2}, {-0.5, 0}, {-1.5, -2}, {-2.5, -2},
		{0.49999997, 0}, {3.7, 4}, {-3.7, -4}, {4194303, 4194303}, {-4194303, -4194303},
	}
	for _, c := range cases {
		if got := nearestInt(c.f); got != c.want {
			t.Errorf("nearestInt(%v) = %d, want %d", c.f, got, c.want)
		}
	}
}

func TestRowHelpersCheckSizes(t *testing.T) {
	if err := QuantizeRow(Q8_0, make([]byte, 34), make([]float32, 31)); err == nil {
		t.Error("QuantizeRow accepted a partial block")
	}
	if err := QuantizeRow(Q8_0, make([]byte, 33), make([]float32, 32)); err == nil {
		t.Error("QuantizeRow accepted a short destination")
	}
	if err := DequantizeRow(Q4_K, make([]float32, 256), make([]byte, 143)); err == nil {
		t.Error("DequantizeRow accepted a short source")
	}
	if err := QuantizeRow(Q4_0, make([]byte, 18), make([]float32, 32)); err == nil {
		t.Error("QuantizeRow accepted an unsupported type")
	}
	if err := QuantizeRow(F16, make([]byte, 6), []float32{1, 2, 3}); err != nil {
		t.Errorf("F16 row of 3: %v", err)
	}
	for _, typ := range []Type{F32, F16, BF16, Q8_0, Q5_0, Q4_K, Q6_K, Q8_K} {
		f, err := FormatOf(typ)
		if err != nil {
			t.Fatalf("%s not registered: %v", typ, err)
		}
		if f.Quantize == nil || f.Dequantize == nil || (f.Dot == nil && typ != Q8_K) {
			t.Errorf("%s: incomplete format", typ)
		}
	}
}

// ---------------------------------------------------------------------------
// Benchmarks.

func benchDot(b *testing.B, typ Type) {
	const n = 4096
	r := rand.New(rand.NewPCG(3, 4))
	f, _ := FormatOf(typ)
	wq := quantizeTo(b, typ, gaussRow(r, n, 0.02))
	aq := quantizeTo(b, f.VecDotType, gaussRow(r, n, 1))
	b.SetBytes(int64(len(wq)))
	b.ResetTimer()
	var s float32
	for i := 0; i < b.N; i++ {
		s += f.Dot(n, wq, aq)
	}
	sinkF32 = s
}

func benchQuantize(b *testing.B, typ Type) {
	const n = 4096
	r := rand.New(rand.NewPCG(5, 6))
	x := gaussRow(r, n, 0.02)
	size, _ := typ.RowSize(n)
	q := make([]byte, size)
	f, _ := FormatOf(typ)
	b.SetBytes(4 * n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Quantize(q, x)
	}
}

var sinkF32 float32

func BenchmarkDotF32(b *testing.B)       { benchDot(b, F32) }
func BenchmarkDotF16(b *testing.B)       { benchDot(b, F16) }
func BenchmarkDotBF16(b *testing.B)      { benchDot(b, BF16) }
func BenchmarkQuantizeF32(b *testing.B)  { benchQuantize(b, F32) }
func BenchmarkQuantizeF16(b *testing.B)  { benchQuantize(b, F16) }
func BenchmarkQuantizeBF16(b *testing.B) { benchQuantize(b, BF16) }
