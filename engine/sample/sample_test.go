package sample

import (
	"math"
	randv2 "math/rand/v2"
	"slices"
	"testing"
)

// newPCGForTest returns the first output of the documented generator.
func newPCGForTest(seed uint64) uint64 { return randv2.NewPCG(seed, 0).Uint64() }

func TestGreedyTies(t *testing.T) {
	for _, c := range []struct {
		logits []float32
		want   int32
	}{
		{[]float32{1, 3, 3, 2}, 1},
		{[]float32{5, 5, 5}, 0},
		{[]float32{-1, float32(math.NaN()), -1, -0.5}, 3},
		{[]float32{float32(math.NaN()), 2, 2}, 1},
		{[]float32{float32(math.Inf(-1)), float32(math.Inf(-1))}, 0},
		{[]float32{0, float32(math.Copysign(0, -1)), -1}, 0},
	} {
		if got := Greedy(c.logits); got != c.want {
			t.Errorf("Greedy(%v) = %d, want %d", c.logits, got, c.want)
		}
		if got := New(Params{}).Sample(c.logits); got != c.want {
			t.Errorf("Sample(T=0, %v) = %d, want %d", c.logits, got, c.want)
		}
	}
}

func randomLogits(n int, seed uint64) []float32 {
	x := seed
	out := make([]float32, n)
	for i := range out {
		x = x*6364136223846793005 + 1442695040888963407
		out[i] = float32(int32(x>>40)%1000) / 100
	}
	return out
}

func TestSameSeedSameSequence(t *testing.T) {
	logits := randomLogits(512, 7)
	for _, p := range []Params{
		{Temperature: 0.8, Seed: 42},
		{Temperature: 1.2, TopK: 40, Seed: 42},
		{Temperature: 0.7, TopP: 0.9, Seed: 42},
		{Temperature: 1, TopK: 50, TopP: 0.95, Seed: 1<<63 + 5},
	} {
		a, b := New(p), New(p)
		var sa, sb []int32
		for i := 0; i < 200; i++ {
			sa = append(sa, a.Sample(logits))
			sb = append(sb, b.Sample(logits))
		}
		if !slices.Equal(sa, sb) {
			t.Errorf("%+v: sequences differ", p)
		}
		distinct := map[int32]bool{}
		for _, v := range sa {
			distinct[v] = true
		}
		if len(distinct) < 2 {
			t.Errorf("%+v: 200 draws gave only %v", p, distinct)
		}
		p2 := p
		p2.Seed++
		c := New(p2)
		var sc []int32
		for i := 0; i < 200; i++ {
			sc = append(sc, c.Sample(logits))
		}
		if slices.Equal(sa, sc) {
			t.Errorf("%+v: another seed gave the same sequence", p)
		}
	}
}

func TestRandomSeedRecorded(t *testing.T) {
	s := New(Params{Temperature: 1})
	if s.Seed() == 0 {
		t.Fatal("no seed chosen")
	}
	if s.Params().Seed != s.Seed() {
		t.Fatal("Params does not carry the seed")
	}
	logits := randomLogits(100, 3)
	replay := New(Params{Temperature: 1, Seed: s.Seed()})
	for i := 0; i < 50; i++ {
		if a, b := s.Sample(logits), replay.Sample(logits); a != b {
			t.Fatalf("step %d: %d vs %d on replay with the recorded seed", i, a, b)
		}
	}
	if New(Params{Temperature: 1}).Seed() == s.Seed() {
		t.Error("two random seeds are equal")
	}
	if New(Params{}).Seed() != 0 {
		t.Error("greedy sampler invented a seed")
	}
}

func TestTopK1IsGreedy(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		logits := randomLogits(300, seed)
		logits[17] = logits[Greedy(logits)] // make a tie: the lower id must win
		s := New(Params{Temperature: 1.5, TopK: 1, Seed: seed})
		for i := 0; i < 10; i++ {
			if got, want := s.Sample(logits), Greedy(logits); got != want {
				t.Fatalf("top-k=1 gave %d, greedy %d", got, want)
			}
		}
	}
	// a tiny top-p also leaves only the best token
	s := New(Params{Temperature: 1, TopP: 1e-9, Seed: 9})
	logits := randomLogits(300, 99)
	for i := 0; i < 10; i++ {
		if got, want := s.Sample(logits), Greedy(logits); got != want {
			t.Fatalf("top-p=1e-9 gave %d, greedy %d", got, want)
		}
	}
}

func frequencies(p Params, logits []float32, n int) []float64 {
	s := New(p)
	f := make([]float64, len(logits))
	for i := 0; i < n; i++ {
		f[s.Sample(logits)]++
	}
	for i := range f {
		f[i] /= float64(n)
	}
	return f
}

func TestDistribution(t *testing.T) {
	logits := []float32{float32(math.Log(0.1)), float32(math.Log(0.5)), float32(math.Log(0.15)), float32(math.Log(0.25))}
	const n = 200000
	check := func(name string, got, want []float64) {
		t.Helper()
		for i := range want {
			if math.Abs(got[i]-want[i]) > 0.006 {
				t.Errorf("%s: frequencies %.4f, want %.4f", name, got, want)
				return
			}
		}
	}
	check("T=1", frequencies(Params{Temperature: 1, Seed: 1}, logits, n), []float64{0.1, 0.5, 0.15, 0.25})
	// T=0.5 squares the probabilities
	sq := []float64{0.01, 0.25, 0.0225, 0.0625}
	var z float64
	for _, v := range sq {
		z += v
	}
	for i := range sq {
		sq[i] /= z
	}
	check("T=0.5", frequencies(Params{Temperature: 0.5, Seed: 2}, logits, n), sq)
	check("top-k=2", frequencies(Params{Temperature: 1, TopK: 2, Seed: 3}, logits, n), []float64{0, 0.5 / 0.75, 0, 0.25 / 0.75})
	// nucleus 0.8: 0.5 + 0.25 = 0.75 < 0.8, so 0.15 joins
	check("top-p=0.8", frequencies(Params{Temperature: 1, TopP: 0.8, Seed: 4}, logits, n), []float64{0, 0.5 / 0.9, 0.15 / 0.9, 0.25 / 0.9})
	check("top-p=0.75", frequencies(Params{Temperature: 1, TopP: 0.75, Seed: 5}, logits, n), []float64{0, 0.5 / 0.75, 0, 0.25 / 0.75})
	// NaN and -Inf logits are never drawn
	odd := []float32{float32(math.NaN()), 0, float32(math.Inf(-1)), 0}
	check("nan/inf", frequencies(Params{Temperature: 1, Seed: 6}, odd, n), []float64{0, 0.5, 0, 0.5})
}

// TestDocumentedDraw replays the documented algorithm by hand for one step.
func TestDocumentedDraw(t *testing.T) {
	logits := []float32{0.5, 2, 2, -1, 1}
	p := Params{Temperature: 0.9, TopK: 3, TopP: 0.95, Seed: 12345}
	s := New(p)
	got := s.Sample(logits)
	// candidates by logit desc, id asc: 1, 2, 4 (top-k 3)
	order := []int{1, 2, 4}
	var probs []float64
	var sum float64
	for _, id := range order {
		v := math.Exp((float64(logits[id]) - 2) / float64(float32(0.9)))
		probs = append(probs, v)
		sum += v
	}
	target := float64(float32(0.95)) * sum
	var run float64
	for i, v := range probs {
		run += v
		if run >= target {
			probs = probs[:i+1]
			break
		}
	}
	sum = run
	x := newPCGForTest(p.Seed)
	u := float64(x>>11) * 0x1p-53
	run = 0
	want := int32(order[len(probs)-1])
	for i, v := range probs {
		run += v
		if run > u*sum {
			want = int32(order[i])
			break
		}
	}
	if got != want {
		t.Fatalf("Sample = %d, documented algorithm gives %d", got, want)
	}
}

func TestTopLogprobs(t *testing.T) {
	logits := []float32{1, 3, 3, float32(math.NaN()), 2, -5}
	top := TopLogprobs(logits, 4)
	wantIDs := []int32{1, 2, 4, 0}
	lse := math.Log(math.Exp(1) + 2*math.Exp(3) + math.Exp(2) + math.Exp(-5))
	for i, c := range top {
		if c.Token != wantIDs[i] {
			t.Fatalf("order %v, want ids %v", top, wantIDs)
		}
		if want := float64(logits[c.Token]) - lse; math.Abs(float64(c.Logprob)-want) > 1e-6 {
			t.Errorf("token %d: logprob %v, want %v", c.Token, c.Logprob, want)
		}
	}
	if got := TopLogprobs(logits, 100); len(got) != 5 {
		t.Errorf("n > vocab: %d entries", len(got))
	}
	if TopLogprobs(logits, 0) != nil {
		t.Error("n = 0 returned entries")
	}
	big := randomLogits(32000, 5)
	all := TopLogprobs(big, 32000)
	var total float64
	for i, c := range all {
		total += math.Exp(float64(c.Logprob))
		if i > 0 && (c.Logprob > all[i-1].Logprob || (c.Logprob == all[i-1].Logprob && big[c.Token] == big[all[i-1].Token] && c.Token < all[i-1].Token)) {
			t.Fatalf("not sorted at %d", i)
		}
	}
	if math.Abs(total-1) > 1e-4 {
		t.Errorf("probabilities sum to %v", total)
	}
	t5 := TopLogprobs(big, 5)
	for i := range t5 {
		if t5[i] != all[i] {
			t.Fatalf("top-5 %v differs from the head of the full list %v", t5, all[:5])
		}
	}
}

func TestSampleAllocs(t *testing.T) {
	logits := randomLogits(32000, 11)
	s := New(Params{Temperature: 0.8, TopK: 40, TopP: 0.9, Seed: 1})
	s.Sample(logits)
	if a := testing.AllocsPerRun(20, func() { s.Sample(logits) }); a != 0 {
		t.Errorf("%v allocations per sample", a)
	}
}

func BenchmarkSample32000(b *testing.B) {
	logits := randomLogits(32000, 11)
	for _, p := range []Params{{}, {Temperature: 0.8, Seed: 1}, {Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: 1}} {
		s := New(p)
		b.Run("", func(b *testing.B) {
			for b.Loop() {
				s.Sample(logits)
			}
		})
	}
}

func TestRadixSort(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 1000, 32000} {
		keys := make([]uint64, n)
		x := uint64(n)
		for i := range keys {
			x = x*6364136223846793005 + 1442695040888963407
			keys[i] = key(float32(int32(x>>40)%500)/7, i)
		}
		want := slices.Clone(keys)
		slices.Sort(want)
		radixSort(keys, make([]uint64, n))
		if !slices.Equal(keys, want) {
			t.Fatalf("n=%d: radix sort differs from slices.Sort", n)
		}
	}
}
