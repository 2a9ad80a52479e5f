package kernels

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Matrix is a weight matrix in one tensor type: Rows rows of Cols elements.
// In LayoutRows (the zero value, the file's layout) row r is at
// Data[r*RowBytes() : (r+1)*RowBytes()] and Data usually aliases a
// memory-mapped model file; in LayoutX8 groups of eight rows are
// interleaved (x8.go). In GGUF terms Cols = Dims[0].
type Matrix struct {
	Type       Type
	Rows, Cols int
	Data       []byte
	Layout     Layout
}

// NewMatrix checks that data holds exactly rows×cols elements of type t.
func NewMatrix(t Type, rows, cols int, data []byte) (*Matrix, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("kernels: matrix %d×%d: dimensions must be positive", rows, cols)
	}
	rb, err := t.RowSize(cols)
	if err != nil {
		return nil, err
	}
	if len(data) != rows*rb {
		return nil, fmt.Errorf("kernels: %s matrix %d×%d needs %d bytes, have %d", t, rows, cols, rows*rb, len(data))
	}
	return &Matrix{Type: t, Rows: rows, Cols: cols, Data: data}, nil
}

// RowBytes is the size in bytes of one row.
func (m *Matrix) RowBytes() int { return m.Cols / m.Type.BlockSize() * m.Type.TypeSize() }

// Row returns the bytes of row r of a matrix in LayoutRows (it panics on
// another layout: use UnpackX8Row).
func (m *Matrix) Row(r int) []byte {
	if m.Layout != LayoutRows {
		panic("kernels: Matrix.Row on a matrix in layout " + m.Layout.String())
	}
	rb := m.RowBytes()
	return m.Data[r*rb : (r+1)*rb : (r+1)*rb]
}

// GetRow dequantizes row r of w into dst[:w.Cols] (the embedding lookup).
func GetRow(dst []float32, w *Matrix, row int) error {
	if row < 0 || row >= w.Rows {
		return fmt.Errorf("kernels: row %d out of range [0,%d)", row, w.Rows)
	}
	if len(dst) < w.Cols {
		return fmt.Errorf("kernels: destination holds %d floats, row has %d", len(dst), w.Cols)
	}
	f, err := FormatOf(w.Type)
	if err != nil {
		return err
	}
	if w.Layout == LayoutX8 && row < w.Rows&^7 {
		// Block by block through a buffer on the stack: no allocation
		// per token when a tied embedding is repacked.
		var blk [blockQ6_KSize]byte
		ts, bs := w.Type.TypeSize(), w.Type.BlockSize()
		nb := w.Cols / bs
		base := (row / 8) * nb * 8 * ts
		for b := 0; b < nb; b++ {
			unpackX8(w.Type, blk[:ts], w.Data[base+b*8*ts:base+(b+1)*8*ts], row%8)
			f.Dequantize(dst[b*bs:(b+1)*bs], blk[:ts])
		}
		return nil
	}
	if w.Layout == LayoutX8 {
		rb := w.RowBytes()
		f.Dequantize(dst[:w.Cols], w.Data[row*rb:(row+1)*rb])
		return nil
	}
	f.Dequantize(dst[:w.Cols], w.Row(row))
	return nil
}

// Dequantize expands the whole matrix into dst (Rows×Cols floats).
func Dequantize(dst []float32, w *Matrix) error {
	if len(dst) < w.Rows*w.Cols {
		return fmt.Errorf("kernels: destination holds %d floats, matrix has %d", len(dst), w.Rows*w.Cols)
	}
	f, err := FormatOf(w.Type)
	if err != nil {
		return err
	}
	rb := w.RowBytes()
	var buf []byte
	if w.Layout == LayoutX8 {
		buf = make([]byte, rb)
	}
	for r := 0; r < w.Rows; r++ {
		row := w.Data[r*rb : (r+1)*rb]
		if buf != nil {
			UnpackX8Row(buf, w, r)
			row = buf
		}
		f.Dequantize(dst[r*w.Cols:(r+1)*w.Cols], row)
	}
	return nil
}

// F32Bytes views a float32 slice as its little-endian bytes without copying
// (the F32 activation layout), for calling a DotFunc on float vectors.
func F32Bytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	if !littleEndian {
		panic("kernels: F32Bytes needs a little-endian machine")
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// ---------------------------------------------------------------------------
// Backends

// BackendSpec describes a kernel set. A backend is the pure-Go registry
// (FormatOf) with some functions replaced, typically by assembly twins that
// give bit-identical results.
type BackendSpec struct {
	Name string
	// Dots replaces the dot product for weight types (the key is the weight
	// type; the activation operand keeps the format's VecDotType).
	Dots map[Type]DotFunc
	// Activations replaces the conversion of float activations into a
	// VecDotType (the key is the VecDotType).
	Activations map[Type]QuantizeFunc
	// Tiles replaces, per weight type, the row × token loop of MatMul: one
	// call computes a block of outputs, each of which must be bit-identical
	// to the type's dot product (Dots[type], else the registry's).
	Tiles map[Type]DotTileFunc
	// TilesX8 replaces, per weight type, the kernel of matrices in
	// LayoutX8 (x8.go); the generic backend's unpack rows and use the dot.
	TilesX8 map[Type]X8TileFunc
	// SwiGLU and ExpSub replace the vector parts of SwiGLU and Softmax
	// (bit-identical).
	SwiGLU swigluFunc
	ExpSub expSubFunc
	// Attn replaces the attention products (AttnScores, AttnValues).
	Attn attnFuncs
	// Priority ranks backends for BackendByName(""): the highest wins
	// (cpu-generic has 0). Register only backends the CPU can run.
	Priority int
}

// Backend is a named kernel set used by MatMul. Kernels are resolved lazily
// from the overrides and then the format registry, so a backend may be
// registered from any init function regardless of file order.
type Backend struct {
	name  string
	prio  int
	dots  map[Type]DotFunc
	acts  map[Type]QuantizeFunc
	tiles map[Type]DotTileFunc
	x8    map[Type]X8TileFunc
	glu   swigluFunc
	exp   expSubFunc
	attn  attnFuncs
	cache [64]atomic.Pointer[kernel]
}

type kernel struct {
	typ, vecDot Type
	dot         DotFunc
	tile        DotTileFunc  // nil: loop over dot
	anyTile     DotTileFunc  // tile, or a loop over dot
	x8          X8TileFunc   // nil: the type has no x8 layout
	act         QuantizeFunc // nil: F32 activations used in place
}

// genericActivations are the activation conversions of the pure-Go backend:
// those of llama.cpp's x86 build, which differ from the reference
// quantizers for Q8_0 (round-half-even, reciprocal of the scale).
var genericActivations = map[Type]QuantizeFunc{
	Q8_0: QuantizeQ8_0Activations,
}

var backendReg struct {
	sync.RWMutex
	m map[string]*Backend
}

// GenericBackendName is the name of the pure-Go kernel set.
const GenericBackendName = "cpu-generic"

var genericBackend = mustRegister(BackendSpec{Name: GenericBackendName})

func mustRegister(s BackendSpec) *Backend {
	b, err := RegisterBackend(s)
	if err != nil {
		panic(err)
	}
	return b
}

// GenericBackend returns the pure-Go kernel set ("cpu-generic").
func GenericBackend() *Backend { return genericBackend }

// RegisterBackend adds a kernel set under s.Name. Overrides missing from s
// fall back to the generic (pure-Go) kernels.
func RegisterBackend(s BackendSpec) (*Backend, error) {
	if s.Name == "" {
		return nil, fmt.Errorf("kernels: backend needs a name")
	}
	b := &Backend{name: s.Name, prio: s.Priority, dots: map[Type]DotFunc{}, acts: map[Type]QuantizeFunc{}, tiles: map[Type]DotTileFunc{}, x8: map[Type]X8TileFunc{}, glu: s.SwiGLU, exp: s.ExpSub, attn: s.Attn}
	for t, f := range genericActivations {
		b.acts[t] = f
	}
	for t, f := range s.Dots {
		if f == nil || int(t) >= len(b.cache) {
			return nil, fmt.Errorf("kernels: backend %s: bad dot override for %s", s.Name, t)
		}
		b.dots[t] = f
	}
	for t, f := range s.Tiles {
		if f == nil {
			return nil, fmt.Errorf("kernels: backend %s: nil tile override for %s", s.Name, t)
		}
		b.tiles[t] = f
	}
	for t, f := range s.TilesX8 {
		if f == nil || !HasX8(t) {
			return nil, fmt.Errorf("kernels: backend %s: bad x8 tile override for %s", s.Name, t)
		}
		b.x8[t] = f
	}
	for t, f := range s.Activations {
		if f == nil {
			return nil, fmt.Errorf("kernels: backend %s: nil activation override for %s", s.Name, t)
		}
		b.acts[t] = f
	}
	backendReg.Lock()
	defer backendReg.Unlock()
	if backendReg.m == nil {
		backendReg.m = map[string]*Backend{}
	}
	if _, dup := backendReg.m[s.Name]; dup {
		return nil, fmt.Errorf("kernels: backend %q registered twice", s.Name)
	}
	backendReg.m[s.Name] = b
	return b, nil
}

// BackendByName returns the registered backend called name; "" (or "auto")
// selects the best one the CPU supports (highest priority).
func BackendByName(name string) (*Backend, error) {
	backendReg.RLock()
	defer backendReg.RUnlock()
	if name == "" || name == "auto" {
		var best *Backend
		for _, b := range backendReg.m {
			if best == nil || b.prio > best.prio || (b.prio == best.prio && b.name < best.name) {
				best = b
			}
		}
		return best, nil
	}
	if b, ok := backendReg.m[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("kernels: no backend %q (available: %v)", name, backendNamesLocked())
}

// AvailableBackends lists the registered backend names, best first.
func AvailableBackends() []string {
	backendReg.RLock()
	defer backendReg.RUnlock()
	return backendNamesLocked()
}

func backendNamesLocked() []string {
	bs := make([]*Backend, 0, len(backendReg.m))
	for _, b := range backendReg.m {
		bs = append(bs, b)
	}
	sort.Slice(bs, func(i, j int) bool {
		if bs[i].prio != bs[j].prio {
			return bs[i].prio > bs[j].prio
		}
		return bs[i].name < bs[j].name
	})
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.name
	}
	return names
}

// SwiGLU is kernels.SwiGLU with this backend's kernels (bit-identical).
func (b *Backend) SwiGLU(out, gate, up []float32) { swigluWith(out, gate, up, b.glu) }

// Softmax is kernels.Softmax with this backend's kernels (bit-identical).
func (b *Backend) Softmax(x []float32, scale float32) { softmaxWith(x, scale, b.exp) }

// Name returns the backend's name, e.g. "cpu-generic".
func (b *Backend) Name() string { return b.name }

func (b *Backend) kernel(t Type) (*kernel, error) {
	if int(t) < len(b.cache) {
		if k := b.cache[t].Load(); k != nil {
			return k, nil
		}
	}
	f, err := FormatOf(t)
	if err != nil {
		return nil, err
	}
	dot := f.Dot
	if o, ok := b.dots[t]; ok {
		dot = o
	}
	if dot == nil {
		return nil, fmt.Errorf("kernels: %s has no dot product (backend %s)", t, b.name)
	}
	k := &kernel{typ: t, vecDot: f.VecDotType, dot: dot, tile: b.tiles[t]}
	k.anyTile = k.tile
	if k.anyTile == nil {
		k.anyTile = dotLoopTile(dot)
	}
	if HasX8(t) {
		k.x8 = b.x8[t]
		if k.x8 == nil {
			k.x8 = genericX8Tile(t, dot)
		}
	}
	if f.VecDotType != F32 || !littleEndian {
		vf, err := FormatOf(f.VecDotType)
		if err != nil {
			return nil, fmt.Errorf("kernels: %s: activation type: %w", t, err)
		}
		k.act = vf.Quantize
		if a, ok := b.acts[f.VecDotType]; ok {
			k.act = a
		}
		if k.act == nil {
			return nil, fmt.Errorf("kernels: %s: no conversion to %s", t, f.VecDotType)
		}
	}
	if int(t) < len(b.cache) {
		b.cache[t].Store(k)
	}
	return k, nil
}

// Supports reports (as an error naming the type) whether MatMul can use
// weights of type t.
func (b *Backend) Supports(t Type) error {
	_, err := b.kernel(t)
	return err
}

// Dot returns the dot product this backend uses for weights of type t, and
// the type the activation operand must be in.
func (b *Backend) Dot(t Type) (DotFunc, Type, error) {
	k, err := b.kernel(t)
	if err != nil {
		return nil, 0, err
	}
	return k.dot, k.vecDot, nil
}

// SupportsLayout reports (as an error) whether MatMul can use weights of
// type t in layout l.
func (b *Backend) SupportsLayout(t Type, l Layout) error {
	k, err := b.kernel(t)
	if err != nil {
		return err
	}
	switch l {
	case LayoutRows:
		return nil
	case LayoutX8:
		if k.x8 == nil {
			return fmt.Errorf("kernels: %s has no x8 layout", t)
		}
		return nil
	}
	return fmt.Errorf("kernels: unknown layout %s", l)
}

// TileX8 returns this backend's kernel for weights of type t in LayoutX8.
func (b *Backend) TileX8(t Type) (X8TileFunc, error) {
	k, err := b.kernel(t)
	if err != nil {
		return nil, err
	}
	if k.x8 == nil {
		return nil, fmt.Errorf("kernels: %s has no x8 layout", t)
	}
	return k.x8, nil
}

// Tile returns this backend's row × token kernel for weights of type t (a
// loop over Dot when the backend has no tile kernel); every output it
// computes is bit-identical to Dot's.
func (b *Backend) Tile(t Type) (DotTileFunc, error) {
	k, err := b.kernel(t)
	if err != nil {
		return nil, err
	}
	return k.anyTile, nil
}

// dotLoopTile is the DotTileFunc of a plain dot product: rows outer, tokens
// inner.
func dotLoopTile(dot DotFunc) DotTileFunc {
	return func(n int, w []byte, wStride, nRows int, a []byte, aStride, nTok int, out []float32, outStride int) {
		for r := 0; r < nRows; r++ {
			wr := w[r*wStride:]
			for t := 0; t < nTok; t++ {
				out[t*outStride+r] = dot(n, wr, a[t*aStride:])
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Matrix products

// MatMulOp is one product of a MatMulMany call: Out (nTok×W.Rows) = x·Wᵀ.
type MatMulOp struct {
	Out []float32
	W   *Matrix
}

const maxMatMulOps = 4

type mmOp struct {
	out      []float32
	data     []byte
	rows     int
	rowBytes int
	groups   int // row groups in LayoutX8 (0: LayoutRows)
	dot      DotFunc
	tile     DotTileFunc
	x8       X8TileFunc
}

// mmJob is the state of one matrix product, owned by the pool (which runs
// one job at a time) so that products allocate nothing.
type mmJob struct {
	ops       [maxMatMulOps]mmOp
	nops      int
	rows      int // sum over ops
	units     int // work units: rows × bytes per row, summed over ops
	cols      int
	nTok      int
	x         []float32
	act       []byte // activations in VecDotType, nTok rows of actStride
	actStride int
	conv      QuantizeFunc
	buf       []byte // backing store of act when converted
}

// MatMul computes out[t*w.Rows + r] = dot(row r of w, x_t) for t < nTok, where
// x holds nTok rows of w.Cols floats.
//
// Each x_t is first converted once to the weight format's VecDotType (as
// ggml does: Q8_0 activations for Q8_0/Q5_0 weights, Q8_K for K-quants, F16
// for F16 weights; F32 is used in place). Rows are then split across the
// pool's workers; a worker takes each of its rows in turn and computes it
// against every token while the row is in cache. Every output element is one
// call of the same dot function on the same bytes, so the result is
// bit-identical for any thread count and any batching of tokens.
//
// MatMul allocates nothing once the pool's activation buffer has grown to
// the largest batch. It panics on mismatched shapes or an unsupported type
// (check types at load time with Supports).
func (b *Backend) MatMul(p *Pool, out []float32, w *Matrix, x []float32, nTok int) {
	b.MatMulMany(p, x, nTok, MatMulOp{Out: out, W: w})
}

// MatMulMany computes several products of the same activations (for example
// Q, K and V) in one parallel step: the activations are converted once and
// the rows of all the matrices are split across the workers together. The
// matrices must have the same Cols; when their VecDotTypes differ the
// products are done one after another.
func (b *Backend) MatMulMany(p *Pool, x []float32, nTok int, ops ...MatMulOp) {
	b.matMul(p, x, nil, 0, nTok, ops)
}

// Activation returns the type activations are converted to for weights of
// type t (the VecDotType) and this backend's conversion into it (nil when
// float32 activations are used in place): what MatMul does before the
// products, for callers that convert activations themselves (MatMulActs).
func (b *Backend) Activation(t Type) (Type, QuantizeFunc, error) {
	k, err := b.kernel(t)
	if err != nil {
		return 0, nil, err
	}
	return k.vecDot, k.act, nil
}

// MatMulActs is MatMulMany with the activations already converted (each
// row by the conversion Activation returns): act holds nTok rows actStride
// bytes apart, in the activation type of every op's weights, which must
// agree. A caller that converts rows as they are produced, in parallel,
// saves MatMul's conversion step.
func (b *Backend) MatMulActs(p *Pool, act []byte, actStride, nTok int, ops ...MatMulOp) {
	if len(ops) > maxMatMulOps {
		panic("kernels: MatMulActs: too many products")
	}
	b.matMul(p, nil, act, actStride, nTok, ops)
}

// matMul runs ops on x (converted here) or on act (converted by the caller).
func (b *Backend) matMul(p *Pool, x []float32, act []byte, actStride, nTok int, ops []MatMulOp) {
	if len(ops) == 0 || nTok <= 0 {
		return
	}
	if len(ops) > maxMatMulOps {
		b.matMul(p, x, act, actStride, nTok, ops[:maxMatMulOps])
		b.matMul(p, x, act, actStride, nTok, ops[maxMatMulOps:])
		return
	}
	k0, err := b.kernel(ops[0].W.Type)
	if err != nil {
		panic(err)
	}
	cols := ops[0].W.Cols
	for i := 1; i < len(ops); i++ {
		k, err := b.kernel(ops[i].W.Type)
		if err != nil {
			panic(err)
		}
		if ops[i].W.Cols != cols {
			panic(fmt.Sprintf("kernels: MatMulMany: matrices with %d and %d columns", cols, ops[i].W.Cols))
		}
		if k.vecDot != k0.vecDot {
			if act != nil {
				panic(fmt.Sprintf("kernels: MatMulActs: %s and %s take different activation types", ops[0].W.Type, ops[i].W.Type))
			}
			for _, op := range ops {
				b.MatMulMany(p, x, nTok, op)
			}
			return
		}
	}
	rowAct := 4 * cols
	if k0.act != nil {
		if rowAct, err = k0.vecDot.RowSize(cols); err != nil {
			panic(fmt.Sprintf("kernels: MatMul: %s activations: %v", k0.vecDot, err))
		}
	}
	switch {
	case act == nil && len(x) < nTok*cols:
		panic(fmt.Sprintf("kernels: MatMul: x holds %d floats, need %d×%d", len(x), nTok, cols))
	case act != nil && (actStride < rowAct || len(act)/actStride < nTok):
		panic(fmt.Sprintf("kernels: MatMulActs: %d bytes with stride %d do not hold %d rows of %d", len(act), actStride, nTok, rowAct))
	}
	c := p.c
	if !p.inner {
		c.lock()
		defer c.mu.Unlock()
	}
	j := &c.mm
	j.nops, j.rows, j.units, j.cols, j.nTok = len(ops), 0, 0, cols, nTok
	for i, op := range ops {
		k, _ := b.kernel(op.W.Type)
		w := op.W
		if len(op.Out) < nTok*w.Rows {
			panic(fmt.Sprintf("kernels: MatMul: out holds %d floats, need %d×%d", len(op.Out), nTok, w.Rows))
		}
		rb := w.RowBytes()
		if len(w.Data) < w.Rows*rb {
			panic(fmt.Sprintf("kernels: MatMul: %s matrix %d×%d has only %d bytes", w.Type, w.Rows, w.Cols, len(w.Data)))
		}
		j.ops[i] = mmOp{out: op.Out, data: w.Data, rows: w.Rows, rowBytes: rb, dot: k.dot, tile: k.tile}
		switch w.Layout {
		case LayoutRows:
		case LayoutX8:
			if k.x8 == nil {
				panic(fmt.Sprintf("kernels: MatMul: %s has no x8 layout", w.Type))
			}
			j.ops[i].groups, j.ops[i].x8 = w.Rows/8, k.x8
		default:
			panic(fmt.Sprintf("kernels: MatMul: unknown layout %s", w.Layout))
		}
		j.rows += w.Rows
		j.units += w.Rows * rb
	}

	// Activations.
	switch {
	case act != nil:
		j.act, j.actStride = act, actStride
	case k0.act == nil:
		j.act, j.actStride = F32Bytes(x[:nTok*cols]), 4*cols
	default:
		if cap(j.buf) < nTok*rowAct {
			j.buf = make([]byte, nTok*rowAct)
		}
		j.act, j.actStride, j.conv, j.x = j.buf[:nTok*rowAct], rowAct, k0.act, x
		if p.inner && nTok*cols <= 8192 {
			c.convChunk(0, 0, nTok) // small: worker 0 converts inline
		} else {
			c.run(p.inner, nTok, c.convFn)
		}
		j.conv, j.x = nil, nil
	}
	c.run(p.inner, j.units, c.mmFn)
	for i := range j.ops[:j.nops] {
		j.ops[i] = mmOp{}
	}
	j.act = nil
}

func (c *poolCore) convChunk(_, start, end int) {
	j := &c.mm
	for t := start; t < end; t++ {
		j.conv(j.act[t*j.actStride:(t+1)*j.actStride], j.x[t*j.cols:(t+1)*j.cols])
	}
}

// mmChunk computes the rows of work units [start, end). The work of a
// product is split in proportion to the bytes of its rows (a proxy of their
// cost that weighs, say, Q6_K rows against Q4_K ones): row r of an op whose
// units start at base belongs to the chunk holding unit base + r*rowBytes.
func (c *poolCore) mmChunk(_, start, end int) {
	j := &c.mm
	nTok, cols, stride := j.nTok, j.cols, j.actStride
	act := j.act
	base := 0
	for oi := 0; oi < j.nops; oi++ {
		op := &j.ops[oi]
		rows, rb := op.rows, op.rowBytes
		s := min(ceilDiv(max(start-base, 0), rb), rows)
		e := min(ceilDiv(max(end-base, 0), rb), rows)
		base += rows * rb
		if s >= e {
			continue
		}
		out, dot := op.out, op.dot
		if g8 := 8 * op.groups; g8 > 0 {
			// Row groups: both ends rounded to the nearest multiple of 8
			// (the neighbouring chunk rounds the shared end the same way).
			gs, ge := min((s+4)&^7, g8), min((e+4)&^7, g8)
			if gs < ge {
				op.x8(cols, op.data[gs*rb:ge*rb], (ge-gs)/8, act, stride, nTok, out[gs:], rows)
			}
			s = max(s, g8)
			if s >= e {
				continue
			}
		}
		if op.tile != nil {
			op.tile(cols, op.data[s*rb:], rb, e-s, act, stride, nTok, out[s:], rows)
			continue
		}
		for r := s; r < e; r++ {
			wrow := op.data[r*rb : (r+1)*rb]
			for t := 0; t < nTok; t++ {
				out[t*rows+r] = dot(cols, wrow, act[t*stride:(t+1)*stride])
			}
		}
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
