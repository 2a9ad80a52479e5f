package e2e_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/model"
	"github.com/weos/llm-engine/kernels"
)

// BenchmarkRuntimeOverhead: what the runtime adds to the forward passes.
// For each model and thread count, one generate of 128 tokens through the
// daemon (client wall time: RPC, queue, scheduler, sampling, detokenizing,
// the run record's fsync) against the same forward passes run bare
// (model.Batch on a pool owned by a locked thread, as a lane does, feeding
// the tokens the daemon generated). overhead = 1 - bare / daemon, medians
// over the iterations; outside_run_ms is the wall time beyond the run's own
// total_ms, in_run_us/token what total_ms adds to the bare passes per token.
//
//	go test -run '^$' -bench RuntimeOverhead -benchtime 20x ./rpc/e2e/
func BenchmarkRuntimeOverhead(b *testing.B) {
	for _, file := range []string{"stories260K.gguf", "synth-256-Q4_K_M.gguf"} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/t%d", file, threads), func(b *testing.B) {
				r := start(b, daemon.Config{}, engine.Options{Threads: threads})
				c := dial(b, r.srv.Path)
				id := load(b, c, file, nil)
				const n = 128
				plan := map[string]any{"threads": threads}
				gen := func() (*engine.GenerateResult, time.Duration) {
					t0 := time.Now()
					res, err := c.Generate(ctxT(b, time.Minute), engine.GenerateRequest{Model: id, Prompt: targetPrompt, MaxTokens: n, Plan: plan}, nil)
					if err != nil {
						b.Fatal(err)
					}
					return res, time.Since(t0)
				}
				res, _ := gen()
				if len(res.Tokens) != n {
					b.Fatalf("%d tokens (%s): use a prompt that does not stop early", len(res.Tokens), res.FinishReason)
				}
				bare := bareRunner(b, sharedModel(b, file), threads, res.PromptTokens, res.Tokens)
				defer bare.close()
				var daemonT, bareT, outside, inRun []float64
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					r, d := gen()
					bt := bare.run().Seconds()
					daemonT = append(daemonT, d.Seconds())
					bareT = append(bareT, bt)
					// Outside the run: the client's wall time beyond the
					// engine's total_ms (RPC, plan, record, reply); inside:
					// total_ms beyond the bare passes, per token.
					outside = append(outside, d.Seconds()*1e3-r.Metrics.TotalMS)
					inRun = append(inRun, (r.Metrics.TotalMS-bt*1e3)*1e3/n)
				}
				b.StopTimer()
				dm, bm := median(daemonT), median(bareT)
				b.ReportMetric(float64(n)/dm, "daemon_tok/s")
				b.ReportMetric(float64(n)/bm, "bare_tok/s")
				b.ReportMetric(100*(1-bm/dm), "overhead_%")
				b.ReportMetric(median(outside), "outside_run_ms")
				b.ReportMetric(median(inRun), "in_run_us/token")
			})
		}
	}
}

// bare runs a prompt then decodes the given tokens with model.Batch on its
// own pool, on a locked OS thread that is the pool's worker 0.
type bare struct {
	req  chan struct{}
	resp chan time.Duration
}

func bareRunner(b *testing.B, path string, threads int, prompt, gen []int32) *bare {
	br := &bare{req: make(chan struct{}), resp: make(chan time.Duration)}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread()
		pool, err := kernels.NewPoolHere(threads, kernels.PoolOptions{})
		if err != nil {
			ready <- err
			return
		}
		defer pool.Close()
		f, err := gguf.Open(path)
		if err != nil {
			ready <- err
			return
		}
		defer f.Close()
		be, err := kernels.BackendByName("")
		if err != nil {
			ready <- err
			return
		}
		layout := kernels.LayoutRows
		if be.Name() == kernels.AVX2BackendName {
			layout = kernels.LayoutX8
		}
		m, err := model.Load(f, model.Options{Backend: be, Pool: pool, Layout: layout})
		if err != nil {
			ready <- err
			return
		}
		defer m.Close()
		V := m.Config.Vocab
		bt := m.NewBatch(engine.PrefillStep)
		s := m.NewStateKV(len(prompt)+len(gen)+1, 1, kernels.F32)
		logits := make([]float32, V)
		states, toks := []*model.State{s}, []int32{0}
		ready <- nil
		for range br.req {
			s.Reset()
			t0 := time.Now()
			if err := bt.Step(pool, []model.Span{{State: s, Tokens: prompt, Logits: true}}, logits); err != nil {
				panic(err)
			}
			for _, tok := range gen[:len(gen)-1] {
				toks[0] = tok
				if err := bt.Forward(pool, states, toks, logits); err != nil {
					panic(err)
				}
			}
			br.resp <- time.Since(t0)
		}
	}()
	if err := <-ready; err != nil {
		b.Fatal(err)
	}
	return br
}

func (br *bare) run() time.Duration {
	br.req <- struct{}{}
	return <-br.resp
}

func (br *bare) close() { close(br.req) }
