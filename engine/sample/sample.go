// Package sample picks the next token from a vector of logits.
//
// Greedy (Temperature == 0): the argmax, the lowest token id on ties.
//
// Otherwise, exactly (so that another implementation can reproduce a run
// from its recorded seed):
//
//  1. Candidates are the tokens whose logit is not NaN, ordered by logit,
//     highest first, ties by token id, lowest first.
//  2. Top-k (TopK > 0): keep the first TopK candidates.
//  3. Softmax at temperature T, in float64: p_i = exp((l_i - l_0) / T) with
//     l_0 the first (largest) logit, and S = Σ p_i summed in candidate order.
//  4. Top-p (0 < TopP < 1): keep the shortest prefix whose running sum of
//     p_i reaches TopP·S (at least one candidate); S becomes that prefix's
//     running sum. Float32 parameters are widened exactly to float64.
//  5. Draw: x is the next value of the generator (one per sampled token,
//     whatever k and p leave), u = (x >> 11) · 2⁻⁵³, and the token is the
//     first candidate whose running sum exceeds u·S (the last kept
//     candidate if rounding leaves none).
//
// The generator is math/rand/v2's PCG (PCG-DXSM, 128-bit state) created with
// rand.NewPCG(Seed, 0); x is its Uint64. Seed 0 with T > 0 means "choose
// one": 8 bytes from crypto/rand (never 0), reported by Sampler.Seed so that
// the run can be replayed.
package sample

import (
	"crypto/rand"
	"encoding/binary"
	"math"
	randv2 "math/rand/v2"
	"slices"
)

// Params are the sampling settings.
type Params struct {
	Temperature float32 // 0 (or less): greedy
	TopK        int     // 0 (or less): off
	TopP        float32 // outside (0,1): off
	Seed        uint64  // 0 with Temperature > 0: chosen at random
}

// Sampler draws tokens; it keeps its generator state between calls and
// allocates nothing per token after the first.
type Sampler struct {
	p    Params
	seed uint64
	pcg  *randv2.PCG

	keys  []uint64
	tmp   []uint64
	probs []float64
}

// New returns a sampler for p.
func New(p Params) *Sampler {
	s := &Sampler{p: p, seed: p.Seed}
	if p.Temperature > 0 {
		for s.seed == 0 {
			var b [8]byte
			if _, err := rand.Read(b[:]); err != nil {
				panic("sample: crypto/rand: " + err.Error())
			}
			s.seed = binary.LittleEndian.Uint64(b[:])
		}
		s.pcg = randv2.NewPCG(s.seed, 0)
	}
	return s
}

// Seed returns the seed in use: Params.Seed, or the one chosen by New.
func (s *Sampler) Seed() uint64 { return s.seed }

// Params returns the settings, with the seed actually used.
func (s *Sampler) Params() Params { p := s.p; p.Seed = s.seed; return p }

// Greedy returns the index of the largest logit, the lowest on ties; NaNs
// are ignored (0 if every logit is NaN).
func Greedy(logits []float32) int32 {
	best, bv := -1, float32(0)
	for i, v := range logits {
		if v > bv || (best < 0 && v == v) {
			best, bv = i, v
		}
	}
	return int32(max(best, 0))
}

// key orders (logit desc, id asc) as an ascending uint64: the logit's bits
// mapped to an order-preserving uint32, complemented, in the high half.
func key(l float32, id int) uint64 {
	b := math.Float32bits(l + 0) // -0 → +0, so the two zeros tie
	if b&(1<<31) != 0 {
		b = ^b
	} else {
		b |= 1 << 31
	}
	return uint64(^b)<<32 | uint64(uint32(id))
}

func keyID(k uint64) int32 { return int32(uint32(k)) }

// sorted fills s.keys with the candidates (non-NaN) in order.
func (s *Sampler) sorted(logits []float32) []uint64 {
	keys := s.keys[:0]
	for i, v := range logits {
		if v == v {
			keys = append(keys, key(v, i))
		}
	}
	if cap(s.tmp) < len(keys) {
		s.tmp = make([]uint64, cap(keys))
	}
	radixSort(keys, s.tmp[:len(keys)])
	s.keys = keys
	return keys
}

// topK fills s.keys with the first k candidates in order (insertion into a
// sorted list bounded at k: O(n) for the usual small k).
func (s *Sampler) topK(logits []float32, k int) []uint64 {
	if cap(s.keys) < k {
		s.keys = make([]uint64, 0, len(logits))
	}
	best := s.keys[:0]
	for i, v := range logits {
		if v != v {
			continue
		}
		kv := key(v, i)
		if len(best) == k {
			if kv >= best[k-1] {
				continue
			}
			best = best[:k-1]
		}
		at, _ := slices.BinarySearch(best, kv)
		best = slices.Insert(best, at, kv)
	}
	s.keys = best
	return best
}

// radixSort sorts keys ascending (LSD, 8-bit digits, skipping digits that
// are the same in every key), using tmp (same length) as scratch.
func radixSort(keys, tmp []uint64) {
	if len(keys) < 64 {
		slices.Sort(keys)
		return
	}
	and, or := ^uint64(0), uint64(0)
	for _, k := range keys {
		and &= k
		or |= k
	}
	varying := and ^ or
	src, dst := keys, tmp
	for shift := uint(0); shift < 64; shift += 8 {
		if (varying>>shift)&0xff == 0 {
			continue
		}
		var count [257]int
		for _, k := range src {
			count[(k>>shift)&0xff+1]++
		}
		for i := 1; i < 257; i++ {
			count[i] += count[i-1]
		}
		for _, k := range src {
			d := (k >> shift) & 0xff
			dst[count[d]] = k
			count[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &keys[0] {
		copy(keys, src)
	}
}

// Sample picks the next token.
func (s *Sampler) Sample(logits []float32) int32 {
	if s.p.Temperature <= 0 {
		return Greedy(logits)
	}
	x := s.pcg.Uint64() // one draw per token, always
	var keys []uint64
	if k := s.p.TopK; k > 0 && k < len(logits)/4 {
		keys = s.topK(logits, k)
	} else {
		keys = s.sorted(logits)
		if k > 0 && k < len(keys) {
			keys = keys[:k]
		}
	}
	if len(keys) == 0 {
		return 0
	}
	if cap(s.probs) < len(keys) {
		s.probs = make([]float64, len(logits))
	}
	probs := s.probs[:len(keys)]
	t := float64(s.p.Temperature)
	l0 := float64(logits[keyID(keys[0])])
	if math.IsInf(l0, 0) {
		return keyID(keys[0]) // +Inf wins outright; all -Inf: the lowest id
	}
	var sum float64
	for i, k := range keys {
		p := math.Exp((float64(logits[keyID(k)]) - l0) / t)
		probs[i] = p
		sum += p
	}
	if tp := float64(s.p.TopP); tp > 0 && tp < 1 {
		target := tp * sum
		var run float64
		for i, p := range probs {
			run += p
			if run >= target {
				probs = probs[:i+1]
				break
			}
		}
		sum = run
	}
	u := float64(x>>11) * 0x1p-53
	target := u * sum
	var run float64
	for i, p := range probs {
		run += p
		if run > target {
			return keyID(keys[i])
		}
	}
	return keyID(keys[len(probs)-1])
}

// TokenLogprob is a token and its log-probability.
type TokenLogprob struct {
	Token   int32
	Logprob float32
}

// TopLogprobs returns the n most likely tokens under softmax(logits) (at
// temperature 1), highest first, ties by token id, with their log-softmax
// values computed in float64: l_i - (l_max + log Σ exp(l_j - l_max)).
func TopLogprobs(logits []float32, n int) []TokenLogprob {
	if n <= 0 {
		return nil
	}
	lmax := math.Inf(-1)
	for _, v := range logits {
		if float64(v) > lmax {
			lmax = float64(v)
		}
	}
	var sum float64
	for _, v := range logits {
		if v == v {
			sum += math.Exp(float64(v) - lmax)
		}
	}
	lse := lmax + math.Log(sum)
	// partial selection of the n best keys
	best := make([]uint64, 0, min(n, len(logits)))
	for i, v := range logits {
		if v != v {
			continue
		}
		k := key(v, i)
		if len(best) == cap(best) {
			if k >= best[len(best)-1] {
				continue
			}
			best = best[:len(best)-1]
		}
		at, _ := slices.BinarySearch(best, k)
		best = slices.Insert(best, at, k)
	}
	out := make([]TokenLogprob, len(best))
	for i, k := range best {
		id := keyID(k)
		out[i] = TokenLogprob{Token: id, Logprob: float32(float64(logits[id]) - lse)}
	}
	return out
}
