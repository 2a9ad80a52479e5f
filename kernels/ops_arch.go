package kernels

import (
	"math"
	"sync"
)

// Element-wise operations of the non-Llama-2 architectures (Qwen, Gemma,
// Phi-3, Llama 3), with the numerics of ggml's CPU ops as in ops.go.

// RopeCacheExt fills cs with the (cos, sin) pairs of position pos as
// ggml_rope_cache_init with ext_factor 0: theta starts at float32(pos) and
// is multiplied by thetaScale in float32 after each pair; pair i uses
// theta/factors[i] (when factors is not nil; Llama 3 rope_freqs, LongRoPE
// short/long factors), times freqScale (linear scaling); cos and sin are the
// float32 roundings of the exact values, times mscale (the attention factor).
// With no factors, freqScale 1 and mscale 1 it equals RopeCache.
func RopeCacheExt(cs []float32, pos int, thetaScale, freqScale, mscale float32, factors []float32) {
	theta := float32(pos)
	for i := 0; i+1 < len(cs); i += 2 {
		t := theta
		if factors != nil {
			t /= factors[i/2]
		}
		t *= freqScale
		s, c := math.Sincos(float64(t))
		cs[i] = float32(c) * mscale
		cs[i+1] = float32(s) * mscale
		theta *= thetaScale
	}
}

// RopeNeox rotates, in place, nHeads consecutive heads of headDim floats in
// x by the pairs of cs (from RopeCache; len(cs) = the number of rotated
// dims n), in ggml's NEOX mode: pair i of the cache rotates (x[i],
// x[i+n/2]) into (x0*cos - x1*sin, x0*sin + x1*cos). Dims past n are left
// alone.
func RopeNeox(x []float32, nHeads, headDim int, cs []float32) {
	nRot := len(cs)
	half := nRot / 2
	for h := 0; h < nHeads; h++ {
		v := x[h*headDim : h*headDim+nRot]
		for i := 0; i < half; i++ {
			c, s := cs[2*i], cs[2*i+1]
			x0, x1 := v[i], v[i+half]
			v[i] = float32(x0*c) - float32(x1*s)
			v[i+half] = float32(x0*s) + float32(x1*c)
		}
	}
}

// Scale sets x[i] *= s (ggml_scale).
func Scale(x []float32, s float32) {
	for i, v := range x {
		x[i] = v * s
	}
}

// Softcap sets x[i] = tanh(x[i]*(1/c))*c, as ggml_scale(1/c), ggml_tanh,
// ggml_scale(c) (Gemma 2's attention and final logit soft-capping). 1/c is
// rounded to float32 once; tanh is the float32 rounding of the exact value
// (standing in for libm's tanhf).
func Softcap(x []float32, c float32) {
	inv := 1 / c
	for i, v := range x {
		x[i] = tanhf(v*inv) * c
	}
}

func tanhf(x float32) float32 { return float32(math.Tanh(float64(x))) }

// GELU constants of ggml (vec.h).
const (
	geluCoefA   = float32(0.044715)
	sqrt2OverPi = float32(0.79788456080286535587989211986876)
)

// GELUTanh is ggml_gelu_f32 computed in float32:
// 0.5*x*(1 + tanh(sqrt(2/pi)*x*(1 + 0.044715*x*x))).
func GELUTanh(x float32) float32 {
	return float32(float32(0.5)*x) * (1 + tanhf(float32(sqrt2OverPi*x)*(1+float32(float32(geluCoefA*x)*x))))
}

var (
	geluOnce  sync.Once
	geluTable []float32 // ggml_table_gelu_f16, widened to float32
)

// geluF16Table is ggml's 65536-entry GELU table: entry h is
// fp16(GELUTanh(fp32(h))), kept here as the float32 value of that fp16.
func geluF16Table() []float32 {
	geluOnce.Do(func() {
		t := make([]float32, 1<<16)
		for i := range t {
			t[i] = FP16ToFP32(FP32ToFP16(GELUTanh(FP16ToFP32(uint16(i)))))
		}
		geluTable = t
	})
	return geluTable
}

// GeGLU sets out[i] = gelu(gate[i]) * up[i] over one row, as ggml's
// ggml_vec_geglu_f32 with GGML_GELU_FP16 (the CPU build's default): gate ≤
// -10 gives 0, gate ≥ 10 gives gate*up, otherwise GELU is looked up in the
// fp16 table at fp16(gate). out may alias gate or up.
func GeGLU(out, gate, up []float32) {
	n := len(gate)
	out = out[:n]
	up = up[:n]
	tab := geluF16Table()
	for i, x := range gate {
		switch {
		case x <= -10:
			out[i] = 0
		case x >= 10:
			out[i] = x * up[i]
		default:
			out[i] = tab[FP32ToFP16(x)] * up[i]
		}
	}
}
