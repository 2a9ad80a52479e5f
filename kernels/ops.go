package kernels

import "math"

// Element-wise operations of a Llama layer, written to reproduce the
// numerics of ggml's CPU ops (llama.cpp's x86 AVX2 build) so that logits
// track llama.cpp's:
//
//   - float32 arithmetic rounds at every step; products that feed a sum are
//     wrapped in float32(...) so Go never fuses them.
//   - where ggml's AVX2 code uses its vectorised expf (ggml_v_expf, an
//     FMA-based approximation) the same approximation is used here lane by
//     lane (expVec), including which elements take the vector path and which
//     the scalar libm tail.
//   - sums that ggml keeps in double (ggml_float) are kept in float64.
//
// All ops work on one row; the caller loops over rows (tokens, heads).

// RMSNorm sets out[i] = (x[i]*scale)*w[i] with scale = 1/sqrt(mean(x²)+eps),
// as ggml_compute_forward_rms_norm_f32 followed by ggml_mul: the squares are
// float32, summed in float64; mean is rounded to float32; scale = 1/sqrtf.
// out may alias x.
func RMSNorm(out, x, w []float32, eps float32) {
	n := len(x)
	out = out[:n]
	w = w[:n]
	var sum float64
	for _, v := range x {
		sum += float64(float32(v * v))
	}
	mean := float32(sum / float64(n))
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	for i, v := range x {
		out[i] = float32(v*scale) * w[i]
	}
}

// RopeThetaScale is ggml's theta_scale = powf(base, -2/nRot).
func RopeThetaScale(base float32, nRot int) float32 {
	return float32(math.Pow(float64(base), float64(float32(-2)/float32(nRot))))
}

// RopeCache fills cs with the (cos, sin) pairs of position pos for the
// len(cs)/2 rotated pairs, as ggml_rope_cache_init with freq_scale 1,
// ext_factor 0 and attn_factor 1: theta starts at float32(pos) and is
// multiplied by thetaScale in float32 after each pair; cos and sin are the
// float32 roundings of the exact values.
func RopeCache(cs []float32, pos int, thetaScale float32) {
	theta := float32(pos)
	for i := 0; i+1 < len(cs); i += 2 {
		s, c := math.Sincos(float64(theta))
		cs[i] = float32(c)
		cs[i+1] = float32(s)
		theta *= thetaScale
	}
}

// Rope rotates, in place, nHeads consecutive heads of headDim floats in x by
// the pairs of cs (from RopeCache; len(cs) = the number of rotated dims),
// in ggml's "normal" mode: adjacent pairs (x[2i], x[2i+1]) become
// (x0*cos - x1*sin, x0*sin + x1*cos). Dims past len(cs) are left alone.
func Rope(x []float32, nHeads, headDim int, cs []float32) {
	nRot := len(cs)
	for h := 0; h < nHeads; h++ {
		v := x[h*headDim : h*headDim+nRot]
		for i := 0; i+1 < nRot; i += 2 {
			c, s := cs[i], cs[i+1]
			x0, x1 := v[i], v[i+1]
			v[i] = float32(x0*c) - float32(x1*s)
			v[i+1] = float32(x0*s) + float32(x1*c)
		}
	}
}

// Softmax replaces x by softmax(x*scale), as ggml's soft_max_ext with a
// causal mask whose visible entries are 0: w = x*scale; max; e = exp(w-max)
// with ggml_v_expf over groups of 8 (a partial last group behaves as if
// padded with masked entries, which contribute exactly 0), each group summed
// in float32 in the AVX2 horizontal order and added to a float64 total; then
// x = e * float32(1/total).
func Softmax(x []float32, scale float32) { softmaxWith(x, scale, nil) }

// expSubFunc sets x[i] = expVec(x[i]-m) for every i and returns
// Σ_g float64(hsum8(x[8g:8g+8])), added in order, a partial last group
// padded with zeros (an assembly twin of Softmax's inner loop).
type expSubFunc func(x []float32, m float32) float64

func softmaxWith(x []float32, scale float32, expSub expSubFunc) {
	n := len(x)
	if n == 0 {
		return
	}
	m := float32(math.Inf(-1))
	for i, v := range x {
		v *= scale
		x[i] = v
		if !(m > v) {
			m = v
		}
	}
	var sum float64
	var g [8]float32
	i0 := 0
	if expSub != nil {
		sum = expSub(x, m)
		i0 = n
	}
	for i := i0; i < n; i += 8 {
		k := min(8, n-i)
		for l := 0; l < k; l++ {
			e := expVec(x[i+l] - m)
			x[i+l] = e
			g[l] = e
		}
		for l := k; l < 8; l++ {
			g[l] = 0
		}
		sum += float64(hsum8(&g))
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}

// SwiGLU sets out[i] = silu(gate[i]) * up[i] over one row, as
// ggml_vec_swiglu_f32: groups of 8 use x/(1+ggml_v_expf(-x)), the tail uses
// x/(1+expf(-x)). out may alias gate or up.
func SwiGLU(out, gate, up []float32) { swigluWith(out, gate, up, nil) }

// swigluFunc computes SwiGLU's vector part (the first n8 groups of 8).
type swigluFunc func(out, gate, up []float32, n8 int)

func swigluWith(out, gate, up []float32, vec swigluFunc) {
	n := len(gate)
	out = out[:n]
	up = up[:n]
	v := n &^ 7
	if vec != nil && v > 0 {
		vec(out, gate, up, v/8)
		for i := v; i < n; i++ {
			x := gate[i]
			out[i] = x / (1 + expf(-x)) * up[i]
		}
		return
	}
	for i := 0; i < v; i++ {
		x := gate[i]
		out[i] = x / (1 + expVec(0-x)) * up[i]
	}
	for i := v; i < n; i++ {
		x := gate[i]
		out[i] = x / (1 + expf(-x)) * up[i]
	}
}

// SiLU returns x/(1+expf(-x)) (ggml_silu_f32).
func SiLU(x float32) float32 { return x / (1 + expf(-x)) }

// Add sets out[i] = a[i] + b[i]. out may alias a or b.
func Add(out, a, b []float32) {
	n := len(a)
	out = out[:n]
	b = b[:n]
	for i, v := range a {
		out[i] = v + b[i]
	}
}

// expf is a correctly rounded (in all but rare cases) float32 exp, standing
// in for libm's expf.
func expf(x float32) float32 { return float32(math.Exp(float64(x))) }

// fma32 is the fused float32 multiply-add a*b+c with a single rounding, as
// the FMA instructions (VFMADD…PS/SS) compute it, for every input: it is the
// pure-Go twin that lets assembly kernels use FMA and still match bit for
// bit. The float64 product of two float32 values is exact; adding c in
// float64 rounds once more, which could round twice in a row (to float64,
// then to float32) and land on the wrong side of a float32 halfway point.
// So the float64 sum is corrected to round-to-odd (its exact error, from
// Knuth's TwoSum, says which neighbour to take when the rounded sum is
// even), and round-to-odd in 53 bits followed by round-to-nearest-even in
// 24 bits is the correctly rounded result (Boldo and Melquiond, 2008).
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact: 48 significant bits at most
	cc := float64(c)
	s := p + cc
	if s-s != 0 { // ±Inf or NaN: no rounding to correct
		return float32(s)
	}
	// TwoSum: e = (p + cc) - s exactly.
	bb := s - p
	e := (p - (s - bb)) + (cc - bb)
	if e != 0 {
		u := math.Float64bits(s)
		if u&1 == 0 {
			if (e > 0) == (s > 0) {
				u++ // the exact sum lies farther from zero
			} else {
				u--
			}
			s = math.Float64frombits(u)
		}
	}
	return float32(s)
}

// expVec is one lane of ggml_v_expf, the AVX2+FMA exp approximation of
// ggml's vec.h (from ARM's optimized routines; max error 1.45 ulp + 0.5).
// FMA is fma32, exact.
func expVec(x float32) float32 {
	const (
		r   = 0x1.8p23
		c0  = 0x1.715476p+0
		ln1 = 0x1.62e4p-1
		ln2 = 0x1.7f7d1cp-20
		p0  = 0x1.0e4020p-7
		p1  = 0x1.573e2ep-5
		p2  = 0x1.555e66p-3
		p3  = 0x1.fffdb6p-2
		p4  = 0x1.ffffecp-1
	)
	z := fma32(x, c0, r)
	n := z - r
	b := fma32(-n, ln2, fma32(-n, ln1, x))
	e := math.Float32bits(z) << 23
	k := math.Float32frombits(e + math.Float32bits(1))
	u := b * b
	j := fma32(fma32(fma32(p0, b, p1), u, fma32(p2, b, p3)), u, float32(p4*b))
	an := abs32(n)
	if !(an > 126) {
		return fma32(k, j, k)
	}
	var g uint32
	if n <= 0 {
		g = 0x82000000
	}
	s1 := math.Float32frombits(g + 0x7f000000)
	s2 := math.Float32frombits(e - g)
	if an > 192 {
		return s1 * s1
	}
	return fma32(s2, j, s2) * s1
}
