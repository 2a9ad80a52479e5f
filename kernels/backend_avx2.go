package kernels

// AVX2BackendName is the name of the AVX2 kernel set: the generic backend
// with the assembly dot products, tiles and activation conversions of
// avx2_amd64.go, which give bit-identical results. It is registered only on
// CPUs that can run it (HasAVX2 on amd64), with a priority above
// cpu-generic, so BackendByName("") picks it there.
const AVX2BackendName = "cpu-avx2"

func init() {
	if len(avx2Dots) == 0 {
		return
	}
	mustRegister(BackendSpec{Name: AVX2BackendName, Dots: avx2Dots, Activations: avx2Activations, Tiles: avx2Tiles, TilesX8: avx2X8Tiles, SwiGLU: avx2SwiGLU, ExpSub: avx2ExpSub, Attn: avx2Attn, Priority: 10})
}

// DotTileFunc computes a tile of dot products in one call: for r < nRows and
// t < nTok,
//
//	out[t*outStride + r] = dot(n, w[r*wStride:], a[t*aStride:])
//
// where dot is the weight type's DotFunc, and every result is bit-identical
// to that call. w holds nRows weight rows wStride bytes apart, a holds nTok
// activation rows (already in the VecDotType) aStride bytes apart. It panics
// when a row, an activation or an output falls outside its slice.
type DotTileFunc func(n int, w []byte, wStride, nRows int, a []byte, aStride, nTok int, out []float32, outStride int)

// tileFromDot makes a DotTileFunc out of a DotFunc (rows outer, tokens
// inner, the order MatMul uses).
func tileFromDot(dot DotFunc) DotTileFunc {
	return func(n int, w []byte, wStride, nRows int, a []byte, aStride, nTok int, out []float32, outStride int) {
		for r := 0; r < nRows; r++ {
			wr := w[r*wStride:]
			for t := 0; t < nTok; t++ {
				out[t*outStride+r] = dot(n, wr, a[t*aStride:])
			}
		}
	}
}

// checkTile panics unless the tile's rows, activations and outputs lie
// inside their slices (rowBytes and actBytes are the sizes one dot reads).
func checkTile(rowBytes int, w []byte, wStride, nRows, actBytes int, a []byte, aStride, nTok int, out []float32, outStride int) {
	if nRows < 0 || nTok < 0 || wStride < 0 || aStride < 0 || outStride < 0 {
		panic("kernels: dot tile: negative size or stride")
	}
	if nRows == 0 || nTok == 0 {
		return
	}
	if !spanFits(rowBytes, wStride, nRows, len(w)) || !spanFits(actBytes, aStride, nTok, len(a)) ||
		!spanFits(nRows, outStride, nTok, len(out)) {
		panic("kernels: dot tile: rows, activations or outputs out of range")
	}
}

// spanFits reports whether count items of size bytes, stride apart, fit in
// length (without overflowing int).
func spanFits(size, stride, count, length int) bool {
	if size > length {
		return false
	}
	return stride == 0 || count-1 <= (length-size)/stride
}
