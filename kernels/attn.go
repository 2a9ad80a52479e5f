package kernels

import "fmt"

// Attention products over a KV cache whose keys are stored transposed
// (row d holds component d of every position) and whose values are stored
// by position. Each output element is a chain of fused multiply-adds in a
// fixed order (d for scores, positions for values), starting from +0: so
// an assembly kernel keeps eight positions (scores) or eight dimensions
// (values) in the lanes of a register, with no horizontal sums, and
// matches this pure-Go specification bit for bit.

// AttnScores sets, for g < nq and p < n,
//
//	dst[g*dstStride + p] = fma32(q_g[hd-1], kT[(hd-1)*kStride + p], … fma32(q_g[0], kT[p], +0))
//
// with q_g = q[g*hd : (g+1)*hd]: the dot products of nq query heads with n
// keys. Kernels may compute positions n..⌈n/8⌉·8-1 too: dst rows and kT
// rows must have room for them (their values are then unspecified).
func AttnScores(dst []float32, dstStride int, q []float32, nq, hd int, kT []float32, kStride, n int) {
	checkAttnScores(dst, dstStride, q, nq, hd, kT, kStride, n)
	for g := 0; g < nq; g++ {
		qg := q[g*hd : (g+1)*hd]
		row := dst[g*dstStride : g*dstStride+n]
		for p := range row {
			var s float32
			for d, qd := range qg {
				s = fma32(qd, kT[d*kStride+p], s)
			}
			row[p] = s
		}
	}
}

// AttnValues sets, for g < nq and d < hd,
//
//	out[g*hd + d] = fma32(prob_g[n-1], v[(n-1)*vStride + d], … fma32(prob_g[0], v[d], +0))
//
// with prob_g = prob[g*pStride : g*pStride+n]: the attention outputs of nq
// query heads over n positions of one KV head's values.
func AttnValues(out []float32, prob []float32, pStride, nq int, v []float32, vStride, hd, n int) {
	checkAttnValues(out, prob, pStride, nq, v, vStride, hd, n)
	for g := 0; g < nq; g++ {
		pg := prob[g*pStride : g*pStride+n]
		o := out[g*hd : (g+1)*hd]
		for d := range o {
			var s float32
			for p, w := range pg {
				s = fma32(w, v[p*vStride+d], s)
			}
			o[d] = s
		}
	}
}

// AttnScoresF16 is AttnScores over a key cache of binary16 elements, each
// widened exactly to float32 (the half-size cache of kv_cache type F16).
func AttnScoresF16(dst []float32, dstStride int, q []float32, nq, hd int, kT []uint16, kStride, n int) {
	checkAttnScoresN(dst, dstStride, q, nq, hd, len(kT), kStride, n)
	for g := 0; g < nq; g++ {
		qg := q[g*hd : (g+1)*hd]
		row := dst[g*dstStride : g*dstStride+n]
		for p := range row {
			var s float32
			for d, qd := range qg {
				s = fma32(qd, fp16Table[kT[d*kStride+p]], s)
			}
			row[p] = s
		}
	}
}

// AttnValuesF16 is AttnValues over a value cache of binary16 elements.
func AttnValuesF16(out []float32, prob []float32, pStride, nq int, v []uint16, vStride, hd, n int) {
	checkAttnValuesN(out, prob, pStride, nq, len(v), vStride, hd, n)
	for g := 0; g < nq; g++ {
		pg := prob[g*pStride : g*pStride+n]
		o := out[g*hd : (g+1)*hd]
		for d := range o {
			var s float32
			for p, w := range pg {
				s = fma32(w, fp16Table[v[p*vStride+d]], s)
			}
			o[d] = s
		}
	}
}

func checkAttnScores(dst []float32, dstStride int, q []float32, nq, hd int, kT []float32, kStride, n int) {
	checkAttnScoresN(dst, dstStride, q, nq, hd, len(kT), kStride, n)
}

func checkAttnScoresN(dst []float32, dstStride int, q []float32, nq, hd int, lenK int, kStride, n int) {
	n8 := (n + 7) &^ 7
	switch {
	case nq < 1 || hd < 1 || n < 1 || dstStride < n8 || kStride < n8:
		panic(fmt.Sprintf("kernels: AttnScores: bad shape nq=%d hd=%d n=%d strides %d, %d", nq, hd, n, dstStride, kStride))
	case len(q) < nq*hd || len(dst) < (nq-1)*dstStride+n8 || lenK < (hd-1)*kStride+n8:
		panic("kernels: AttnScores: slices too short")
	}
}

func checkAttnValues(out []float32, prob []float32, pStride, nq int, v []float32, vStride, hd, n int) {
	checkAttnValuesN(out, prob, pStride, nq, len(v), vStride, hd, n)
}

func checkAttnValuesN(out []float32, prob []float32, pStride, nq int, lenV int, vStride, hd, n int) {
	switch {
	case nq < 1 || hd < 1 || n < 1 || pStride < n || vStride < hd:
		panic(fmt.Sprintf("kernels: AttnValues: bad shape nq=%d hd=%d n=%d strides %d, %d", nq, hd, n, pStride, vStride))
	case len(out) < nq*hd || len(prob) < (nq-1)*pStride+n || lenV < (n-1)*vStride+hd:
		panic("kernels: AttnValues: slices too short")
	}
}

// attnFuncs are a backend's attention kernels (nil: the pure-Go ones).
type attnFuncs struct {
	scores    func(dst []float32, dstStride int, q []float32, nq, hd int, kT []float32, kStride, n int)
	values    func(out []float32, prob []float32, pStride, nq int, v []float32, vStride, hd, n int)
	scoresF16 func(dst []float32, dstStride int, q []float32, nq, hd int, kT []uint16, kStride, n int)
	valuesF16 func(out []float32, prob []float32, pStride, nq int, v []uint16, vStride, hd, n int)
}

// AttnScores is kernels.AttnScores with this backend's kernels.
func (b *Backend) AttnScores(dst []float32, dstStride int, q []float32, nq, hd int, kT []float32, kStride, n int) {
	if b.attn.scores != nil {
		b.attn.scores(dst, dstStride, q, nq, hd, kT, kStride, n)
		return
	}
	AttnScores(dst, dstStride, q, nq, hd, kT, kStride, n)
}

// AttnValues is kernels.AttnValues with this backend's kernels.
func (b *Backend) AttnValues(out []float32, prob []float32, pStride, nq int, v []float32, vStride, hd, n int) {
	if b.attn.values != nil {
		b.attn.values(out, prob, pStride, nq, v, vStride, hd, n)
		return
	}
	AttnValues(out, prob, pStride, nq, v, vStride, hd, n)
}

// AttnScoresF16 is kernels.AttnScoresF16 with this backend's kernels.
func (b *Backend) AttnScoresF16(dst []float32, dstStride int, q []float32, nq, hd int, kT []uint16, kStride, n int) {
	if b.attn.scoresF16 != nil {
		b.attn.scoresF16(dst, dstStride, q, nq, hd, kT, kStride, n)
		return
	}
	AttnScoresF16(dst, dstStride, q, nq, hd, kT, kStride, n)
}

// AttnValuesF16 is kernels.AttnValuesF16 with this backend's kernels.
func (b *Backend) AttnValuesF16(out []float32, prob []float32, pStride, nq int, v []uint16, vStride, hd, n int) {
	if b.attn.valuesF16 != nil {
		b.attn.valuesF16(out, prob, pStride, nq, v, vStride, hd, n)
		return
	}
	AttnValuesF16(out, prob, pStride, nq, v, vStride, hd, n)
}
