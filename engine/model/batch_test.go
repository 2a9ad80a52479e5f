package model

import (
	"crypto/sha256"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

// batchModel opens a shared model on a fresh pool of the given size with the
// best backend of this CPU (helpers of its own: helpers_test.go belongs to
// the loader's tests).
func batchModel(t testing.TB, file string, threads int) *Model {
	t.Helper()
	f, err := gguf.Open(sharedModelPath(t, file))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	pool, err := kernels.NewPool(threads)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	return loadWithPool(t, f, pool)
}

// sharedModelPath returns ../shared/models/file, skipping t loudly when
// it is absent.
func sharedModelPath(t testing.TB, file string) string {
	t.Helper()
	dir := os.Getenv("LLM_ENGINE_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared")
	}
	path := filepath.Join(dir, "models", file)
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("SKIPPING %s: shared model %s not found (set LLM_ENGINE_SHARED)", t.Name(), path)
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return path
}

// hereModel is batchModel on a pool whose worker 0 is the calling
// goroutine's thread (locked here), as each of the engine's lanes runs:
// a benchmark on a NewPool would time a hand-off to another thread per
// step that the engine does not make. The caller closes m.Pool() from the
// same goroutine.
func hereModel(t testing.TB, file string, threads int) *Model {
	t.Helper()
	runtime.LockOSThread()
	f, err := gguf.Open(sharedModelPath(t, file))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	pool, err := kernels.NewPoolHere(threads, kernels.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return loadWithPool(t, f, pool)
}

// loadWithPool loads f with the default backend and its default plan's
// layout on pool.
func loadWithPool(t testing.TB, f *gguf.File, pool *kernels.Pool) *Model {
	t.Helper()
	be, err := kernels.BackendByName("")
	if err != nil {
		t.Fatal(err)
	}
	layout := kernels.LayoutRows
	if be.Name() == kernels.AVX2BackendName {
		layout = kernels.LayoutX8 // the default plan's
	}
	m, err := Load(f, Options{Pool: pool, Backend: be, Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func argmaxF(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

func sum(x []float32) [32]byte { return sha256.Sum256(kernels.F32Bytes(x)) }

// solo decodes prompt then n greedy tokens alone with Forward, returning the
// digest of the logits of every decode step (the prompt's last logits first).
func solo(t testing.TB, m *Model, prompt []int32, n int) [][32]byte {
	s := m.NewState(len(prompt) + n + 1)
	V := m.Config.Vocab
	logits := make([]float32, V)
	if err := m.Forward(s, prompt, logits, false); err != nil {
		t.Fatal(err)
	}
	out := [][32]byte{sum(logits)}
	for i := 0; i < n; i++ {
		if err := m.Forward(s, []int32{argmaxF(logits)}, logits, false); err != nil {
			t.Fatal(err)
		}
		out = append(out, sum(logits))
	}
	return out
}

// TestForwardBatchBitIdentical: eight sequences with different prompts that
// join and leave a batch at different steps get, at every step, logits
// bit-identical to decoding each alone; on 1 and 2 threads.
func TestForwardBatchBitIdentical(t *testing.T) {
	files := []string{"stories260K.gguf", "synth-256-Q4_K_M.gguf", "stories260K-Q8_0.gguf", "synth-256-Q6_K.gguf"}
	if testing.Short() {
		files = files[:2]
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			for _, threads := range []int{1, 2} {
				m := batchModel(t, file, threads)
				const nSeq, nGen = 8, 12
				type seq struct {
					prompt []int32
					join   int // step at which it joins
					n      int // tokens it decodes
					want   [][32]byte
					st     *State
					logits []float32
					got    [][32]byte
				}
				V := m.Config.Vocab
				seqs := make([]*seq, nSeq)
				for i := range seqs {
					p := []int32{1}
					for j := 0; j < 2+i; j++ {
						p = append(p, int32((7*i+13*j+3)%(V-3))+3)
					}
					sq := &seq{prompt: p, join: i % 3, n: nGen - i%4}
					sq.want = solo(t, m, p, sq.n)
					seqs[i] = sq
				}
				b := m.NewBatch(nSeq)
				logits := make([]float32, nSeq*V)
				for step := 0; ; step++ {
					var states []*State
					var toks []int32
					var members []*seq
					active := 0
					for _, sq := range seqs {
						if step < sq.join || (sq.st != nil && len(sq.got) == sq.n+1) {
							if step < sq.join {
								active++
							}
							continue
						}
						active++
						if sq.st == nil { // joins: prefill alone
							sq.st = m.NewStateBatch(len(sq.prompt)+sq.n+1, 4)
							sq.logits = make([]float32, V)
							if err := m.Forward(sq.st, sq.prompt, sq.logits, false); err != nil {
								t.Fatal(err)
							}
							sq.got = append(sq.got, sum(sq.logits))
							continue
						}
						states = append(states, sq.st)
						toks = append(toks, argmaxF(sq.logits))
						members = append(members, sq)
					}
					if active == 0 {
						break
					}
					if len(states) == 0 {
						continue
					}
					if err := b.Forward(nil, states, toks, logits); err != nil {
						t.Fatal(err)
					}
					for i, sq := range members {
						copy(sq.logits, logits[i*V:(i+1)*V])
						sq.got = append(sq.got, sum(sq.logits))
					}
				}
				for i, sq := range seqs {
					if len(sq.got) != len(sq.want) {
						t.Fatalf("%d threads: seq %d: %d steps, want %d", threads, i, len(sq.got), len(sq.want))
					}
					for j := range sq.got {
						if sq.got[j] != sq.want[j] {
							t.Errorf("%d threads: seq %d step %d: batched logits differ from solo", threads, i, j)
							break
						}
					}
				}
			}
		})
	}
}

// TestForwardOnFewerThreads: ForwardOn with a 1-thread pool gives the same
// logits as the model's 2-thread pool.
func TestForwardOnFewerThreads(t *testing.T) {
	m := batchModel(t, "stories260K.gguf", 2)
	p1, err := kernels.NewPool(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	prompt := []int32{1, 400, 23, 77, 9}
	V := m.Config.Vocab
	a, b := make([]float32, len(prompt)*V), make([]float32, len(prompt)*V)
	s := m.NewState(16)
	if err := m.Forward(s, prompt, a, true); err != nil {
		t.Fatal(err)
	}
	s2 := m.NewState(16)
	if err := m.ForwardOn(p1, s2, prompt, b, true); err != nil {
		t.Fatal(err)
	}
	if sum(a) != sum(b) {
		t.Fatal("1-thread ForwardOn differs from the 2-thread pool")
	}
	// One batched step on the 1-thread pool.
	bt := m.NewBatch(2)
	l := make([]float32, 2*V)
	if err := bt.Forward(p1, []*State{s, s2}, []int32{5, 5}, l); err != nil {
		t.Fatal(err)
	}
	if sum(l[:V]) != sum(l[V:]) {
		t.Fatal("two identical sequences in one batch got different logits")
	}
	if err := bt.Forward(nil, []*State{s, s}, []int32{5, 5}, l); err == nil {
		t.Fatal("the same state twice in a batch was accepted")
	}
	if est, got := m.StateBytes(16, 0), s.KVBytes(); est < got*9/10 || est > got*11/10 {
		t.Errorf("StateBytes %d is not within 10%% of KVBytes %d", est, got)
	}
}

// BenchmarkForwardBatch: decode steps of 1 and 8 sequences on synth-256
// Q4_K_M, with an F32 KV cache and (kvF16) an F16 one; tok/s counts every
// sequence's token.
func BenchmarkForwardBatch(b *testing.B) {
	for _, threads := range []int{1, 2} {
		for _, n := range []int{1, 8} {
			for _, kv := range []kernels.Type{kernels.F32, kernels.F16} {
				name := fmt.Sprintf("synth-256-Q4_K_M/t%d/seqs%d", threads, n)
				if kv == kernels.F16 {
					name += "/kvF16"
				}
				b.Run(name, func(b *testing.B) {
					m := hereModel(b, "synth-256-Q4_K_M.gguf", threads)
					defer m.pool.Close()
					V := m.Config.Vocab
					states := make([]*State, n)
					toks := make([]int32, n)
					for i := range states {
						states[i] = m.NewStateKV(128, 8, kv)
						if err := m.Forward(states[i], []int32{1, int32(10 + i), 30}, make([]float32, V), false); err != nil {
							b.Fatal(err)
						}
						toks[i] = int32(40 + i)
					}
					bt := m.NewBatch(n)
					logits := make([]float32, n*V)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if states[0].Pos >= 100 {
							for _, s := range states {
								s.Truncate(3)
							}
						}
						if err := bt.Forward(nil, states, toks, logits); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tok/s")
				})
			}
		}
	}
}

// TestStepMixedSpans: steps that mix prompts (whole, and cut into pieces
// that span steps) with other sequences' next tokens give every sequence
// logits bit-identical to running it alone with Forward; on 1 and 2
// threads, with a token budget that forces prompts across steps.
func TestStepMixedSpans(t *testing.T) {
	files := []string{"synth-256-Q4_K_M.gguf", "stories260K.gguf", "stories260K-Q8_0.gguf"}
	if testing.Short() {
		files = files[:1]
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			for _, threads := range []int{1, 2} {
				m := batchModel(t, file, threads)
				V := m.Config.Vocab
				type seq struct {
					prompt []int32
					fed    int // prompt tokens run so far
					n      int // tokens to decode
					want   [][32]byte
					got    [][32]byte
					st     *State
					next   int32
				}
				var seqs []*seq
				for i := range 7 {
					p := []int32{1}
					for j := 0; j < 1+5*i%13; j++ {
						p = append(p, int32((11*i+17*j+5)%(V-3))+3)
					}
					sq := &seq{prompt: p, n: 6 + i%3}
					sq.want = solo(t, m, p, sq.n)
					sq.st = m.NewStateBatch(len(p)+sq.n+1, 1)
					seqs = append(seqs, sq)
				}
				const budget = 16
				b := m.NewBatch(budget)
				logits := make([]float32, budget*V)
				for step := 0; ; step++ {
					// Sequence i joins at step i/2; decoders first, then
					// prompt pieces while the budget lasts.
					var spans []Span
					var owners []*seq
					left := budget
					for _, sq := range seqs {
						if sq.fed == len(sq.prompt) && len(sq.got) < sq.n+1 && left > 0 {
							spans = append(spans, Span{State: sq.st, Tokens: []int32{sq.next}, Logits: true})
							owners = append(owners, sq)
							left--
						}
					}
					for i, sq := range seqs {
						if step < i/2 || sq.fed == len(sq.prompt) || left == 0 {
							continue
						}
						k := min(left, len(sq.prompt)-sq.fed)
						spans = append(spans, Span{State: sq.st, Tokens: sq.prompt[sq.fed : sq.fed+k], Logits: sq.fed+k == len(sq.prompt)})
						owners = append(owners, sq)
						sq.fed += k
						left -= k
					}
					if len(spans) == 0 {
						break
					}
					if err := b.Step(nil, spans, logits); err != nil {
						t.Fatal(err)
					}
					r := 0
					for i, sp := range spans {
						if !sp.Logits {
							continue
						}
						row := logits[r*V : (r+1)*V]
						owners[i].got = append(owners[i].got, sum(row))
						owners[i].next = argmaxF(row)
						r++
					}
				}
				for i, sq := range seqs {
					if len(sq.got) != len(sq.want) {
						t.Fatalf("%d threads: seq %d: %d logits rows, want %d", threads, i, len(sq.got), len(sq.want))
					}
					for j := range sq.got {
						if sq.got[j] != sq.want[j] {
							t.Fatalf("%d threads: seq %d (prompt of %d): logits of step %d differ from its solo run", threads, i, len(sq.prompt), j)
						}
					}
				}
			}
		})
	}
}

// TestStepRejects: Step refuses bad spans before touching any state.
func TestStepRejects(t *testing.T) {
	m := batchModel(t, "stories260K.gguf", 1)
	V := m.Config.Vocab
	a, c := m.NewStateBatch(8, 1), m.NewStateBatch(4, 1)
	b := m.NewBatch(6)
	logits := make([]float32, 2*V)
	for name, spans := range map[string][]Span{
		"empty span":      {{State: a, Tokens: nil}},
		"over the budget": {{State: a, Tokens: make([]int32, 4)}, {State: c, Tokens: make([]int32, 3)}},
		"context full":    {{State: c, Tokens: make([]int32, 5)}},
		"same sequence":   {{State: a, Tokens: []int32{1}}, {State: a, Tokens: []int32{2}}},
		"bad token":       {{State: a, Tokens: []int32{1, int32(V)}}},
		"no room":         {{State: a, Tokens: []int32{1}, Logits: true}, {State: c, Tokens: []int32{1}, Logits: true}, {State: m.NewStateBatch(4, 1), Tokens: []int32{1}, Logits: true}},
	} {
		if err := b.Step(nil, spans, logits); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if a.Pos != 0 || c.Pos != 0 {
			t.Fatalf("%s: a rejected step moved a sequence", name)
		}
	}
}

// TestRopeShared: states share their model's RoPE table, grown for longer
// sequences; every state sees exactly the table made for its context.
func TestRopeShared(t *testing.T) {
	m := batchModel(t, "stories260K.gguf", 1)
	for _, ctx := range []int{10, 300, 10, 257, 1000} {
		s := m.NewStateBatch(ctx, 1)
		fresh := make([]float32, ctx*m.Config.RopeDim)
		m.ropeTable(fresh, ctx)
		if !slices.Equal(s.rope, fresh) {
			t.Fatalf("context %d: the state's RoPE table differs from a fresh one", ctx)
		}
	}
}

// TestStateReuse: a state that held another, longer sequence, reset and
// with every cached key and value poisoned with NaN, gives logits
// bit-identical to a fresh state of another capacity, prompt run through
// Batch.Step and decoding through Batch.Forward as the engine's lanes do
// (which keep finished sequences' states for their next ones): attention
// reads nothing past the positions the sequence wrote.
func TestStateReuse(t *testing.T) {
	for _, file := range []string{"stories260K.gguf", "synth-256-Q4_K_M.gguf"} {
		t.Run(file, func(t *testing.T) {
			for _, threads := range []int{1, 2} {
				m := batchModel(t, file, threads)
				V := m.Config.Vocab
				promptA := []int32{1}
				for j := 0; j < 37; j++ {
					promptA = append(promptA, int32((7*j+3)%(V-3))+3)
				}
				promptB := []int32{1, 22, 13, 41, 9}
				const n = 12
				want := solo(t, m, promptB, n)

				s := m.NewStateBatch(64, 1)
				if err := m.Forward(s, promptA, make([]float32, V), false); err != nil {
					t.Fatal(err)
				}
				s.Reset()
				nan := float32(math.NaN())
				for i := range s.kc {
					s.kc[i] = nan
				}
				for i := range s.vc {
					s.vc[i] = nan
				}
				b := m.NewBatch(8)
				logits := make([]float32, V)
				if err := b.Step(nil, []Span{{State: s, Tokens: promptB, Logits: true}}, logits); err != nil {
					t.Fatal(err)
				}
				got := [][32]byte{sum(logits)}
				for i := 0; i < n; i++ {
					if err := b.Forward(nil, []*State{s}, []int32{argmaxF(logits)}, logits); err != nil {
						t.Fatal(err)
					}
					got = append(got, sum(logits))
				}
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("threads %d: step %d: a reused state's logits differ from a fresh state's", threads, i)
					}
				}
			}
		})
	}
}

// TestCopyPrefix: a state given another's first n positions continues
// exactly as a state that computed them (F32 and F16 caches, states of
// different capacities); mismatched states are refused.
func TestCopyPrefix(t *testing.T) {
	m := batchModel(t, "synth-256-Q4_K_M.gguf", 2)
	V := m.Config.Vocab
	p := []int32{1}
	for j := 0; j < 21; j++ {
		p = append(p, int32((5*j+11)%(V-3))+3)
	}
	for _, kv := range []kernels.Type{kernels.F32, kernels.F16} {
		want := func() [][32]byte {
			s := m.NewStateKV(len(p)+6, 1, kv)
			l := make([]float32, V)
			if err := m.Forward(s, p, l, false); err != nil {
				t.Fatal(err)
			}
			out := [][32]byte{sum(l)}
			for i := 0; i < 5; i++ {
				if err := m.Forward(s, []int32{argmaxF(l)}, l, false); err != nil {
					t.Fatal(err)
				}
				out = append(out, sum(l))
			}
			return out
		}()
		src := m.NewStateKV(40, 1, kv)
		if err := m.Forward(src, append(p[:14:14], 7, 8, 9), make([]float32, V), false); err != nil { // shares 14 tokens with p
			t.Fatal(err)
		}
		dst := m.NewStateKV(100, 1, kv)
		if err := dst.CopyPrefix(src, 14); err != nil {
			t.Fatal(err)
		}
		l := make([]float32, V)
		if err := m.Forward(dst, p[14:], l, false); err != nil {
			t.Fatal(err)
		}
		got := [][32]byte{sum(l)}
		for i := 0; i < 5; i++ {
			if err := m.Forward(dst, []int32{argmaxF(l)}, l, false); err != nil {
				t.Fatal(err)
			}
			got = append(got, sum(l))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: a copied prefix continues differently from a computed one", kv)
		}
		if err := dst.CopyPrefix(src, src.Pos+1); err == nil {
			t.Errorf("%s: copying more positions than the source holds was accepted", kv)
		}
		other := kernels.F16
		if kv == kernels.F16 {
			other = kernels.F32
		}
		if err := m.NewStateKV(40, 1, other).CopyPrefix(src, 4); err == nil {
			t.Errorf("%s: copying into a cache of another type was accepted", kv)
		}
	}
}

// BenchmarkNewState: allocating a sequence's state (its KV cache zeroed)
// for synth-256 at its 256-token context, what the engine's lanes save by
// keeping finished sequences' states (engine/exec.go, idleStates).
func BenchmarkNewState(b *testing.B) {
	m := batchModel(b, "synth-256-Q4_K_M.gguf", 1)
	for _, kv := range []kernels.Type{kernels.F32, kernels.F16} {
		b.Run(kv.String(), func(b *testing.B) {
			for b.Loop() {
				s := m.NewStateKV(256, 1, kv)
				s.storeKV(0, 0, make([]float32, m.Config.KVDim()), make([]float32, m.Config.KVDim()))
			}
		})
	}
}
