// Package tune is the plan-tuning loop of `enginectl tune` and of the
// example agent in contrib/agent: it explores threads × quantization ×
// batch × KV cache type around a base plan with bench.run, keeps the candidates whose p95
// inter-token latency meets a bound, picks the best by the objective
// (tokens per joule, or tokens per second) and proposes it with
// plan.propose, the benchmark results as evidence. It only uses the
// JSON-RPC API (rpc/client): what an agent on the host can do.
package tune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
)

// Objectives.
const (
	ObjectiveEnergy     = "energy"     // most tokens per joule
	ObjectiveThroughput = "throughput" // most tokens per second (all streams)
)

// Options drive one tuning session.
type Options struct {
	// Model: a loaded model id (or a path, which needs admin rights).
	Model string
	// Name of the plan to tune and propose a new version of (default
	// "default"); its active version is the base and the baseline.
	Name      string
	Objective string  // ObjectiveEnergy (default) or ObjectiveThroughput
	MaxP95MS  float64 // bound on the p95 inter-token latency; 0: none
	// The space: each candidate is the base plan with threads, the
	// quantization scheme and the batch size (1: simple mode; more:
	// batching with that max_batch) set. Empty dimensions keep the base's.
	Threads       []int
	Quantizations []string
	Batches       []int
	KVTypes       []string // kv_cache.type values (F32, F16)
	// Workload of every bench (its concurrency defaults to the largest
	// batch, so that batching can show) and the budget of each bench.
	Workload engine.BenchWorkload
	Budget   engine.BenchBudget
	// Propose the winner (when it is not the base plan itself).
	Propose bool
	// Logf reports progress (may be nil).
	Logf func(format string, args ...any)
}

// Candidate is one explored plan.
type Candidate struct {
	Label string         `json:"label"`
	Plan  map[string]any `json:"plan"`
	// Result is the candidate's figures in its bench (against the base);
	// nil when it could not run (Skipped says why).
	Result   *engine.BenchPlanResult `json:"result,omitempty"`
	Baseline *engine.BenchPlanResult `json:"baseline,omitempty"`
	Skipped  string                  `json:"skipped,omitempty"`
	Feasible bool                    `json:"feasible"`
	Score    float64                 `json:"score"`
	// ScoreKind: "tokens_per_joule" or "tokens_per_second".
	ScoreKind string `json:"score_kind"`
	Why       string `json:"why,omitempty"`
}

// Outcome is a session's result.
type Outcome struct {
	Objective    string      `json:"objective"`
	EnergySource string      `json:"energy_source"`
	Base         Candidate   `json:"base"`
	Candidates   []Candidate `json:"candidates"`
	Winner       *Candidate  `json:"winner,omitempty"`
	// Proposal is plan.propose's result, when the winner was proposed.
	Proposal *engine.PlanChangeResult `json:"proposal,omitempty"`
	Note     string                   `json:"note,omitempty"`
}

// Run explores the space: one bench.run per candidate, interleaved with the
// base plan (A B A B …), so that every candidate is compared with the base
// on the same workload at the same time.
func Run(ctx context.Context, c *client.Client, o Options) (*Outcome, error) {
	if o.Name == "" {
		o.Name = "default"
	}
	if o.Objective == "" {
		o.Objective = ObjectiveEnergy
	}
	if o.Objective != ObjectiveEnergy && o.Objective != ObjectiveThroughput {
		return nil, fmt.Errorf("objective must be %q or %q, got %q", ObjectiveEnergy, ObjectiveThroughput, o.Objective)
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	got, err := c.GetPlan(ctx, o.Name, 0)
	if err != nil {
		return nil, fmt.Errorf("base plan %s: %w", o.Name, err)
	}
	var base map[string]any
	if err := json.Unmarshal(got.Plan, &base); err != nil {
		return nil, fmt.Errorf("base plan %s: %w", o.Name, err)
	}
	baseRef, _ := json.Marshal(fmt.Sprintf("%s@%d", o.Name, got.Version))
	w := o.Workload
	if w.Concurrency == 0 {
		w.Concurrency = 1
		for _, b := range o.Batches {
			w.Concurrency = max(w.Concurrency, b)
		}
	}
	out := &Outcome{Objective: o.Objective, Base: Candidate{Label: fmt.Sprintf("%s@%d (base)", o.Name, got.Version), Plan: base}}

	cands := candidates(base, o)
	if len(cands) == 0 {
		return nil, errors.New("the space is empty: give threads, quantizations or batches")
	}
	for i := range cands {
		cd := &cands[i]
		doc, _ := json.Marshal(cd.Plan)
		if _, err := c.ResolvePlan(ctx, doc, o.Model); err != nil {
			cd.Skipped = "cannot run here: " + errMessage(err)
			logf("skip %s: %s", cd.Label, cd.Skipped)
			continue
		}
		res, err := c.Bench(ctx, engine.BenchRequest{Model: o.Model, Plans: []json.RawMessage{baseRef, doc}, Workload: w, Budget: o.Budget}, nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			cd.Skipped = "bench failed: " + errMessage(err)
			logf("skip %s: %s", cd.Label, cd.Skipped)
			continue
		}
		out.EnergySource = res.EnergySource
		if len(res.Plans) != 2 || res.Plans[1].Runs == 0 {
			cd.Skipped = fmt.Sprintf("no complete run within the budget (stopped by %s)", res.StoppedBy)
			logf("skip %s: %s", cd.Label, cd.Skipped)
			continue
		}
		b, r := res.Plans[0], res.Plans[1]
		cd.Baseline, cd.Result = &b, &r
		logf("%s: %.1f tok/s median (p5 %.1f, p95 %.1f), p95 latency %.1f ms, %s, base %.1f tok/s",
			cd.Label, r.TokensPerSecond.Median, r.TokensPerSecond.P5, r.TokensPerSecond.P95, r.LatencyP95MS, tpj(r), b.TokensPerSecond.Median)
	}
	// The base's own figures: from its first bench.
	for _, cd := range cands {
		if cd.Baseline != nil {
			bl := *cd.Baseline
			out.Base.Result = &bl
			break
		}
	}
	useEnergy := o.Objective == ObjectiveEnergy && out.EnergySource != engine.EnergyUnavailable && out.EnergySource != ""
	if o.Objective == ObjectiveEnergy && !useEnergy {
		out.Note = "no energy meter: candidates ranked by tokens per second instead of tokens per joule"
	}
	score := func(cd *Candidate) {
		r := cd.Result
		if r == nil {
			return
		}
		cd.Feasible = o.MaxP95MS <= 0 || r.LatencyP95MS <= o.MaxP95MS
		if !cd.Feasible {
			cd.Why = fmt.Sprintf("p95 latency %.1f ms over the bound %.1f ms", r.LatencyP95MS, o.MaxP95MS)
		}
		if useEnergy && r.TokensPerJoule != nil {
			cd.Score, cd.ScoreKind = *r.TokensPerJoule, "tokens_per_joule"
		} else {
			cd.Score, cd.ScoreKind = r.AggregateTokensPerSecond, "tokens_per_second"
		}
	}
	score(&out.Base)
	for i := range cands {
		score(&cands[i])
	}
	out.Candidates = cands
	best := &out.Base
	if best.Result == nil || !best.Feasible {
		best = nil
	}
	ranked := make([]*Candidate, 0, len(cands))
	for i := range cands {
		if cands[i].Feasible {
			ranked = append(ranked, &cands[i])
		}
	}
	sort.SliceStable(ranked, func(i, j int) bool { return ranked[i].Score > ranked[j].Score })
	if len(ranked) > 0 && (best == nil || ranked[0].Score > best.Score) {
		best = ranked[0]
	}
	if best == nil {
		out.Note = strings.TrimPrefix(out.Note+"; no candidate meets the latency bound", "; ")
		return out, nil
	}
	out.Winner = best
	if best == &out.Base {
		logf("the base plan %s is best: nothing to propose", out.Base.Label)
		return out, nil
	}
	logf("winner: %s (%s %.3f vs base %.3f)", best.Label, best.ScoreKind, best.Score, out.Base.Score)
	if !o.Propose {
		return out, nil
	}
	doc, _ := json.Marshal(best.Plan)
	evidence, _ := json.Marshal(map[string]any{
		"objective": o.Objective, "max_p95_ms": o.MaxP95MS, "energy_source": out.EnergySource, "note": out.Note,
		"winner": best, "base": out.Base, "explored": len(cands), "workload": w,
	})
	rationale := fmt.Sprintf("tune (%s): %s gives %s %.3f vs %.3f for %s", o.Objective, best.Label, best.ScoreKind, best.Score, out.Base.Score, out.Base.Label)
	if o.MaxP95MS > 0 {
		rationale += fmt.Sprintf(", p95 inter-token latency %.1f ms ≤ %.1f ms", best.Result.LatencyP95MS, o.MaxP95MS)
	}
	prop, err := c.ProposePlan(ctx, engine.PlanProposeRequest{Name: o.Name, Plan: doc, Rationale: rationale, Evidence: evidence})
	if err != nil {
		return out, fmt.Errorf("proposing %s: %w", best.Label, err)
	}
	out.Proposal = prop
	logf("proposed %s version %d (promote it with plan.promote)", o.Name, prop.Version)
	return out, nil
}

func tpj(r engine.BenchPlanResult) string {
	if r.TokensPerJoule == nil {
		return "energy " + r.EnergySource
	}
	return fmt.Sprintf("%.2f tok/J (%s)", *r.TokensPerJoule, r.EnergySource)
}

func errMessage(err error) string {
	var re *rpc.Error
	if errors.As(err, &re) {
		return fmt.Sprintf("%s (code %d)", re.Message, re.Code)
	}
	return err.Error()
}

// candidates is the space around base, without the base itself.
func candidates(base map[string]any, o Options) []Candidate {
	threads := o.Threads
	if len(threads) == 0 {
		threads = []int{0}
	}
	quants := o.Quantizations
	if len(quants) == 0 {
		quants = []string{""}
	}
	batches := o.Batches
	if len(batches) == 0 {
		batches = []int{0}
	}
	kvs := o.KVTypes
	if len(kvs) == 0 {
		kvs = []string{""}
	}
	baseJSON, _ := json.Marshal(base)
	var out []Candidate
	for _, t := range threads {
		for _, q := range quants {
			for _, b := range batches {
				for _, kv := range kvs {
					c := candidate(base, t, q, b, kv)
					if j, _ := json.Marshal(c.Plan); string(j) != string(baseJSON) {
						out = append(out, c)
					}
				}
			}
		}
	}
	return out
}

// candidate is base with the threads, quantization scheme, batch size and
// KV cache type set (zero values keep the base's).
func candidate(base map[string]any, t int, q string, b int, kv string) Candidate {
	p := clone(base)
	var parts []string
	if t > 0 {
		p["threads"] = t
		parts = append(parts, fmt.Sprintf("threads=%d", t))
	}
	if q != "" {
		sub(p, "quantization")["default"] = q
		parts = append(parts, "quant="+q)
	}
	if b > 0 {
		sm := sub(p, "scheduler")
		if b == 1 {
			sm["mode"] = "simple"
			delete(sm, "max_wait_ms")
		} else {
			sm["mode"] = "batching"
		}
		sm["max_batch"] = b
		parts = append(parts, fmt.Sprintf("batch=%d", b))
	}
	if kv != "" {
		sub(p, "kv_cache")["type"] = kv
		parts = append(parts, "kv="+kv)
	}
	return Candidate{Label: strings.Join(parts, ","), Plan: p}
}

// sub returns the object p[key], made when absent.
func sub(p map[string]any, key string) map[string]any {
	m, _ := p[key].(map[string]any)
	if m == nil {
		m = map[string]any{}
		p[key] = m
	}
	return m
}

func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	json.Unmarshal(b, &out)
	return out
}
