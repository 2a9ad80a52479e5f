package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/weos/llm-engine/power"
)

// EnergyMeter reads cumulative energy: power.Meter (RAPL, or the CPU-time
// estimate) satisfies it. bench.run measures each round's joules with it,
// and the energy scheduling policy each decode step's. Without one, energy
// figures are reported with source "unavailable".
type EnergyMeter interface {
	Read() (power.Reading, error)
	// Source is "rapl" (a measurement) or "estimate" (a model of CPU time).
	Source() string
}

// EnergyUnavailable is the energy source reported without a meter.
const EnergyUnavailable = "unavailable"

func (e *Engine) energyMeter() EnergyMeter {
	if e.opts.EnergyMeter != nil {
		return e.opts.EnergyMeter
	}
	if e.energy != nil && e.energy.meter != nil {
		return e.energy.meter
	}
	return nil
}

// Built-in bench prompt sets.
var benchPrompts = map[string][]string{
	"stories": {
		"Once upon a time, there was a little girl named Lily.",
		"One day, a big dog went to the park.",
		"Tom had a red ball. He liked to",
		"The sun was shining and the birds were",
	},
	"short": {"Once upon a time"},
}

// Bench limits.
const (
	maxBenchPlans       = 8
	maxBenchRepetitions = 1000
	maxBenchConcurrency = 64
	maxBenchTokens      = 4096
)

// Bench answers bench.run: the plans run the same workload interleaved
// (for each repetition, for each prompt: plan A, plan B, …), each round
// being `concurrency` concurrent requests under one plan. Per plan it
// reports the median and 5th/95th percentiles of decode tokens/s and TTFT,
// the p95 inter-token latency, aggregate tokens/s, joules and tokens per
// joule (with the meter's source), whether its outputs equal the first
// plan's, and its median tokens/s over the first plan's. The budget stops
// it: at max_seconds the runs in flight are cancelled (and not counted);
// max_joules is checked after every round. progress (may be nil) gets one
// call per round.
func (e *Engine) Bench(ctx context.Context, req BenchRequest, progress func(BenchProgress)) (*BenchResult, error) {
	w := req.Workload
	switch {
	case req.Model == "":
		return nil, errorf(CodeInvalidParams, "invalid params: field \"model\" is required")
	case len(req.Plans) == 0 || len(req.Plans) > maxBenchPlans:
		return nil, errorf(CodeInvalidParams, "invalid params: field \"plans\": give 1 to %d plans, got %d", maxBenchPlans, len(req.Plans))
	case w.MaxTokens < 0 || w.MaxTokens > maxBenchTokens:
		return nil, errorf(CodeInvalidParams, "invalid params: field \"workload.max_tokens\" must be between 1 and %d", maxBenchTokens)
	case w.Repetitions < 0 || w.Repetitions > maxBenchRepetitions:
		return nil, errorf(CodeInvalidParams, "invalid params: field \"workload.repetitions\" must be between 1 and %d", maxBenchRepetitions)
	case w.Concurrency < 0 || w.Concurrency > maxBenchConcurrency:
		return nil, errorf(CodeInvalidParams, "invalid params: field \"workload.concurrency\" must be between 1 and %d", maxBenchConcurrency)
	case req.Budget.MaxSeconds < 0 || math.IsNaN(req.Budget.MaxSeconds) || req.Budget.MaxJoules < 0 || math.IsNaN(req.Budget.MaxJoules):
		return nil, errorf(CodeInvalidParams, "invalid params: field \"budget\": limits must be ≥ 0")
	}
	if w.MaxTokens == 0 {
		w.MaxTokens = 32
	}
	if w.Repetitions == 0 {
		w.Repetitions = 3
	}
	if w.Concurrency == 0 {
		w.Concurrency = 1
	}
	prompts := w.Prompts
	if len(prompts) == 0 {
		if w.Builtin == "" {
			w.Builtin = "stories"
		}
		var ok bool
		if prompts, ok = benchPrompts[w.Builtin]; !ok {
			return nil, errorf(CodeInvalidParams, "invalid params: field \"workload.builtin\": unknown set %q (stories, short)", w.Builtin)
		}
	} else if w.Builtin != "" {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"workload\": give prompts or builtin, not both")
	}
	meter := e.energyMeter()
	source := EnergyUnavailable
	if meter != nil {
		source = meter.Source()
	}
	if req.Budget.MaxJoules > 0 && meter == nil {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"budget.max_joules\": no energy meter is available, so a joule budget cannot be enforced")
	}

	// Plans are chosen and resolved once: a promotion during the bench does
	// not change what it compares.
	type benchPlan struct {
		ch      *planChoice
		label   string
		res     BenchPlanResult
		tps     []float64
		ttft    []float64
		steps   []float64
		wall    time.Duration
		joules  float64
		metered bool
		outputs map[[3]int][]int32
	}
	plans := make([]*benchPlan, len(req.Plans))
	var modelID string
	for i, raw := range req.Plans {
		ch, err := e.choosePlan(json.RawMessage(raw))
		if err != nil {
			var ee *Error
			if errors.As(err, &ee) {
				ee.Msg = fmt.Sprintf("plans[%d]: %s", i, ee.Msg)
			}
			return nil, err
		}
		m, r, err := e.instanceFor(ctx, req.Model, ch, "bench.run")
		if err != nil {
			var ee *Error
			if errors.As(err, &ee) {
				ee.Msg = fmt.Sprintf("plans[%d]: %s", i, ee.Msg)
			}
			return nil, err
		}
		ch.use.Hash = r.Hash
		bp := &benchPlan{ch: ch, outputs: map[[3]int][]int32{}}
		bp.label = ch.use.String()
		if ch.use.Name == "" {
			bp.label = fmt.Sprintf("inline#%d", i)
		}
		s := r.Plan.Scheduler
		bp.res = BenchPlanResult{Plan: ch.use, Label: bp.label, Threads: *r.Plan.Threads, Quantization: *r.Plan.Quantization.Default,
			Mode: *s.Mode, MaxBatch: *s.MaxBatch, EnergySource: source}
		if i == 0 {
			modelID = m.info.ModelID
		}
		plans[i] = bp
	}

	benchID := "bench-" + newRunID(time.Now())[4:]
	out := &BenchResult{BenchID: benchID, ModelID: modelID, EnergySource: source, Workload: w,
		PlannedRuns: w.Repetitions * len(prompts) * len(plans) * w.Concurrency}
	bctx := ctx
	if req.Budget.MaxSeconds > 0 {
		var cancel context.CancelFunc
		bctx, cancel = context.WithTimeout(ctx, time.Duration(req.Budget.MaxSeconds*float64(time.Second)))
		defer cancel()
	}
	start := time.Now()
	var joules float64
	readJ := func() (float64, bool) {
		if meter == nil {
			return 0, false
		}
		r, err := meter.Read()
		if err != nil {
			return 0, false
		}
		return r.Joules, true
	}
	rounds := w.Repetitions * len(prompts) * len(plans)
	done := 0
rounds:
	for rep := 0; rep < w.Repetitions; rep++ {
		for pi := range prompts {
			for _, bp := range plans {
				if bctx.Err() != nil {
					break rounds
				}
				if req.Budget.MaxJoules > 0 && joules >= req.Budget.MaxJoules {
					out.StoppedBy = "max_joules"
					break rounds
				}
				sampling := benchSampling(bp.ch, rep, pi)
				type one struct {
					res   *GenerateResult
					steps []float64
					err   error
				}
				results := make([]one, w.Concurrency)
				j0, ok0 := readJ()
				t0 := time.Now()
				var wg sync.WaitGroup
				for k := 0; k < w.Concurrency; k++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						greq := GenerateRequest{Model: req.Model, Prompt: prompts[(pi+k)%len(prompts)], MaxTokens: w.MaxTokens, Sampling: sampling}
						var steps []float64
						res, err := e.generate(bctx, greq, nil, runOpts{benchID: benchID, choice: bp.ch, collect: func(sr *seqRun) { steps = sr.stepTimes }})
						results[k] = one{res, steps, err}
					}()
				}
				wg.Wait()
				wall := time.Since(t0)
				j1, ok1 := readJ()
				if ok0 && ok1 && j1 >= j0 {
					joules += j1 - j0
				}
				complete := true
				for _, r := range results {
					if r.err != nil {
						if bctx.Err() != nil {
							complete = false
							continue
						}
						return nil, r.err
					}
					if r.res.FinishReason == "cancelled" {
						complete = false
					}
				}
				if !complete {
					break rounds // cut by the budget: this round does not count
				}
				var roundTok float64
				for k, r := range results {
					m := r.res.Metrics
					bp.tps = append(bp.tps, m.TokensPerSecond)
					bp.ttft = append(bp.ttft, m.TTFTMS)
					bp.steps = append(bp.steps, r.steps...)
					bp.res.GeneratedTokens += int64(m.GeneratedTokens)
					bp.res.Runs++
					out.Runs++
					roundTok += m.TokensPerSecond
					bp.outputs[[3]int{rep, pi, k}] = r.res.Tokens
				}
				bp.wall += wall
				if ok0 && ok1 && j1 >= j0 {
					bp.joules += j1 - j0
					bp.metered = true
				}
				done++
				if progress != nil {
					progress(BenchProgress{BenchID: benchID, Done: done, Total: rounds, Plan: bp.label,
						ElapsedS: time.Since(start).Seconds(), TokensPerSecond: roundTok / float64(w.Concurrency)})
				}
			}
		}
	}
	out.ElapsedS = time.Since(start).Seconds()
	switch {
	case out.StoppedBy != "":
	case ctx.Err() != nil:
		out.StoppedBy = "cancelled"
	case bctx.Err() != nil:
		out.StoppedBy = "max_seconds"
	}
	out.Completed = out.StoppedBy == "" && out.Runs == out.PlannedRuns
	if meter != nil {
		j := joules
		out.Joules = &j
	}
	out.OutputsIdentical = true
	first := plans[0]
	for i, bp := range plans {
		r := &bp.res
		r.TokensPerSecond = spread(bp.tps)
		r.TTFTMS = spread(bp.ttft)
		r.LatencyP95MS = percentile(bp.steps, 0.95)
		if bp.wall > 0 {
			r.AggregateTokensPerSecond = float64(r.GeneratedTokens) / bp.wall.Seconds()
		}
		if bp.metered {
			j := bp.joules
			r.Joules = &j
			if j > 0 {
				tpj := float64(r.GeneratedTokens) / j
				r.TokensPerJoule = &tpj
			}
		}
		r.Identical = true
		for k, toks := range bp.outputs {
			if ft, ok := first.outputs[k]; ok && !slices.Equal(ft, toks) {
				r.Identical = false
			}
		}
		if !r.Identical {
			out.OutputsIdentical = false
		}
		if f := first.res.TokensPerSecond.Median; f > 0 {
			r.RatioToFirst = r.TokensPerSecond.Median / f
		}
		if i == 0 && r.Runs > 0 {
			r.RatioToFirst = 1
		}
		out.Plans = append(out.Plans, *r)
	}
	return out, nil
}

// benchSampling fixes the seed of a sampling plan (temperature > 0 and
// seed 0 would draw a new seed per run) so that every plan samples the
// same way for the same prompt and repetition; nil keeps the plan's.
func benchSampling(ch *planChoice, rep, prompt int) *Sampling {
	s := ch.p.Sampling
	if s == nil || s.Temperature == nil || *s.Temperature == 0 || (s.Seed != nil && *s.Seed != 0) {
		return nil
	}
	sp := Sampling{Temperature: float32(*s.Temperature), TopP: 1, Seed: uint64(1000003*rep + prompt + 1)}
	if s.TopK != nil {
		sp.TopK = *s.TopK
	}
	if s.TopP != nil {
		sp.TopP = float32(*s.TopP)
	}
	return &sp
}

// spread is the median and 5th/95th percentiles (nearest rank).
func spread(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return Spread{Median: percentile(s, 0.5), P5: percentile(s, 0.05), P95: percentile(s, 0.95), N: len(s)}
}
