//go:build !amd64

package kernels

// No assembly kernels off amd64: the generic (pure-Go) backend is used.
var (
	avx2Dots        map[Type]DotFunc
	avx2Activations map[Type]QuantizeFunc
	avx2Tiles       map[Type]DotTileFunc
	avx2X8Tiles     map[Type]X8TileFunc
	avx2SwiGLU      swigluFunc
	avx2ExpSub      expSubFunc
	avx2Attn        attnFuncs
)

func cpuPause(n int) {}
