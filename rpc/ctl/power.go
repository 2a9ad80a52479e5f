package ctl

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weos/llm-engine/engine"
)

type powerCmd struct {
	SetCap     *float64 `name:"set-cap" placeholder:"WATTS" help:"Set the operator's power cap in watts (0 lifts it); needs admin rights."`
	BestEffort bool     `name:"best-effort" help:"With --set-cap: accept a cap this host cannot enforce (it is reported as not enforced)."`
}

type metricsCmd struct {
	Prometheus bool          `help:"Print the Prometheus text exposition (e.g. for node_exporter's textfile collector)."`
	Window     time.Duration `default:"5m" help:"Aggregate the runs that ended in this last window (at most 1h): request latency, TTFT and decode tokens/s p50/p95, throughput."`
}

func (powerCmd) Help() string {
	return `Shows the energy meter (source rapl: a measurement; estimate: a model of CPU time, never a measurement), the current power, the last samples, the power cap and the worker threads' CPU quota, and whether the cap is enforced and how (or why not).

--set-cap W sets the operator's cap (power.set_cap): the inference worker threads' average power is kept at or below W by a CPU quota on their cgroup (closed loop on RAPL, open loop through the estimator). Runs are capped at the lower of this cap and their plan's limits.max_watts. A cap the host cannot enforce is refused (code -32040) unless --best-effort is given.`
}

func (metricsCmd) Help() string {
	return `Prints the engine's counters: runs by finish reason, tokens, energy and tokens per joule by source, power, cap, and the last run. --json prints metrics.get as JSON; --prometheus prints the Prometheus text exposition, e.g. for node_exporter's textfile collector:

  enginectl metrics --prometheus > /var/lib/node_exporter/textfile/llm_engine.prom.$$ &&
    mv /var/lib/node_exporter/textfile/llm_engine.prom.$$ /var/lib/node_exporter/textfile/llm_engine.prom`
}

func (p powerCmd) Run(e *env) error {
	if p.BestEffort && p.SetCap == nil {
		return usageError{errors.New("--best-effort needs --set-cap")}
	}
	if p.SetCap != nil && (*p.SetCap < 0 || math.IsNaN(*p.SetCap) || math.IsInf(*p.SetCap, 0)) {
		return usageError{errors.New("--set-cap must be a number of watts >= 0")}
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	var st *engine.PowerStatus
	if p.SetCap != nil {
		enf := engine.EnforceStrict
		if p.BestEffort {
			enf = engine.EnforceBestEffort
		}
		st, err = c.SetPowerCap(e.ctx, *p.SetCap, enf)
	} else {
		st, err = c.PowerStatus(e.ctx)
	}
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(st)
	}
	printPower(e.stdout, st)
	return nil
}

func printPower(w io.Writer, st *engine.PowerStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	kind := "a measurement"
	if st.Source == "estimate" {
		kind = "an estimate, not a measurement"
	}
	fmt.Fprintf(tw, "source:\t%s (%s)\n", st.Source, kind)
	fmt.Fprintf(tw, "meter:\t%s\n", st.Meter)
	fmt.Fprintf(tw, "power:\t%.2f W now, %.1f J since start\n", st.CurrentWatts, st.Joules)
	if n := len(st.Samples); n > 0 {
		lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
		for _, s := range st.Samples {
			lo, hi, sum = math.Min(lo, s.Watts), math.Max(hi, s.Watts), sum+s.Watts
		}
		span := st.Samples[n-1].At.Sub(st.Samples[0].At).Round(100 * time.Millisecond)
		fmt.Fprintf(tw, "samples:\t%d over %v: min %.2f W, avg %.2f W, max %.2f W\n", n, span, lo, sum/float64(n), hi)
		k := max(0, n-10)
		parts := make([]string, 0, n-k)
		for _, s := range st.Samples[k:] {
			parts = append(parts, fmt.Sprintf("%.2f", s.Watts))
		}
		fmt.Fprintf(tw, "last samples:\t%s W\n", strings.Join(parts, " "))
	}
	if st.CapWatts > 0 {
		state := "NOT ENFORCED"
		if st.CapEnforced {
			state = "enforced"
		}
		fmt.Fprintf(tw, "cap:\t%g W (%s), %s\n", st.CapWatts, st.Enforcement, state)
	} else {
		fmt.Fprintf(tw, "cap:\tnone\n")
	}
	if st.OperatorCapWatts > 0 || st.PlanCapWatts > 0 {
		fmt.Fprintf(tw, "caps:\toperator %g W, plan %g W (0: none)\n", st.OperatorCapWatts, st.PlanCapWatts)
	}
	if st.QuotaPercent > 0 {
		fmt.Fprintf(tw, "cpu quota:\t%.1f%% of one core\n", st.QuotaPercent)
	} else {
		fmt.Fprintf(tw, "cpu quota:\tunlimited\n")
	}
	fmt.Fprintf(tw, "reason:\t%s\n", st.Reason)
	can := "no"
	if st.CanCap {
		can = "yes"
	}
	fmt.Fprintf(tw, "can cap:\t%s: %s\n", can, st.Capability)
	if st.Cgroup != "" {
		fmt.Fprintf(tw, "cgroup:\t%s\n", st.Cgroup)
	}
	tids := make([]string, len(st.WorkerThreads))
	for i, t := range st.WorkerThreads {
		tids[i] = fmt.Sprint(t)
	}
	fmt.Fprintf(tw, "worker threads:\t%s\n", list(tids))
	if st.Error != "" {
		fmt.Fprintf(tw, "meter error:\t%s\n", st.Error)
	}
	tw.Flush()
}

func (m metricsCmd) Run(e *env) error {
	if m.Prometheus && e.json {
		return usageError{errors.New("--prometheus and --json are exclusive")}
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if m.Prometheus {
		text, err := c.Prometheus(e.ctx)
		if err != nil {
			return err
		}
		_, err = io.WriteString(e.stdout, text)
		return err
	}
	if m.Window <= 0 || m.Window > engine.MaxMetricsWindow {
		return usageError{fmt.Errorf("--window must be in (0, %v]", engine.MaxMetricsWindow)}
	}
	mt, err := c.CountersWindow(e.ctx, m.Window)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(mt)
	}
	printMetrics(e.stdout, mt)
	return nil
}

func printMetrics(w io.Writer, m *engine.Counters) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	reasons := make([]string, 0, len(m.RunsByFinishReason))
	for r := range m.RunsByFinishReason {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s %d", r, m.RunsByFinishReason[r])
	}
	fmt.Fprintf(tw, "runs:\t%d (%s)\n", m.Runs, strings.Join(parts, ", "))
	fmt.Fprintf(tw, "tokens:\tprompt %d (%d from kept caches), generated %d\n", m.PromptTokens, m.PromptCachedTokens, m.GeneratedTokens)
	for _, s := range m.Sources() {
		t := m.Energy[s]
		fmt.Fprintf(tw, "energy (%s):\t%.3f J, %.2f tokens/J, %d runs, %.3f CPU-s\n", s, t.Joules, t.TokensPerJoule, t.Runs, t.CPUSeconds)
	}
	p := m.Power
	capS := "no cap"
	if p.CapWatts > 0 {
		capS = fmt.Sprintf("cap %g W", p.CapWatts)
		if p.CapEnforced {
			capS += fmt.Sprintf(" enforced (quota %.1f%% of one core)", p.QuotaCores*100)
		} else {
			capS += " NOT enforced"
		}
	}
	fmt.Fprintf(tw, "power:\t%.2f W (%s), %s\n", p.CurrentWatts, p.Source, capS)
	if h := m.DecodeSeconds; h.Count > 0 {
		fmt.Fprintf(tw, "decode:\t%d runs, %.3f s average\n", h.Count, h.Sum/float64(h.Count))
	}
	if w := m.Window; w.Seconds > 0 {
		win := time.Duration(w.Seconds * float64(time.Second))
		fmt.Fprintf(tw, "last %v:\t%d runs (%s), %d tokens generated, %.1f tokens/s\n", win, w.Runs, reasonList(w.RunsByFinishReason), w.GeneratedTokens, w.TokensPerSecond)
		if w.Runs > 0 {
			fmt.Fprintf(tw, "  request latency:\tp50 %.1f ms, p95 %.1f ms\n", w.RequestLatencyMS.Median, w.RequestLatencyMS.P95)
			fmt.Fprintf(tw, "  time to first token:\tp50 %.1f ms, p95 %.1f ms\n", w.TTFTMS.Median, w.TTFTMS.P95)
			fmt.Fprintf(tw, "  decode per run:\tp50 %.1f tokens/s, p5 %.1f tokens/s\n", w.DecodeTokensPerSecond.Median, w.DecodeTokensPerSecond.P5)
		}
	}
	if l := m.LastRun; l != nil {
		lm := l.Metrics
		fmt.Fprintf(tw, "last run:\t%s %s: %d tokens (%s), %.2f tokens/s, %.3f J, %.2f W, %.2f tokens/J (%s)\n",
			l.RunID, l.ModelID, lm.GeneratedTokens, l.FinishReason, lm.TokensPerSecond, lm.Joules, lm.AvgWatts, lm.TokensPerJoule, lm.EnergySource)
	}
	tw.Flush()
}

// reasonList prints runs by finish reason: "length 3, eos 1" (zeros left
// out; "none" when empty).
func reasonList(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k, n := range m {
		if n > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
