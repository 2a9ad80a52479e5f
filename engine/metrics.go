package engine

import (
	"sort"
	"sync"
	"time"
)

// Counters answers metrics.get; the Prometheus exposition (metrics.prometheus,
// the daemon's /metrics) is written from it by package rpc.
type Counters struct {
	StartTime          time.Time        `json:"start_time"`
	Runs               int64            `json:"runs"`
	RunsByFinishReason map[string]int64 `json:"runs_by_finish_reason"` // length, eos, cancelled, error
	PromptTokens       int64            `json:"prompt_tokens"`
	// PromptCachedTokens of PromptTokens came from kept KV caches (prefix
	// reuse) instead of being computed.
	PromptCachedTokens int64 `json:"prompt_cached_tokens"`
	GeneratedTokens    int64 `json:"generated_tokens"`
	// Energy attributed to runs, by source ("rapl", "estimate"): a figure
	// from the estimator is never added to a measured one.
	Energy map[string]EnergyTotals `json:"energy"`
	// TokensPerJoule is generated tokens / joules over the runs metered with
	// TokensPerJouleSource, the meter's source.
	TokensPerJoule       float64 `json:"tokens_per_joule"`
	TokensPerJouleSource string  `json:"tokens_per_joule_source"`
	// DecodeSeconds is the distribution of the runs' decode time;
	// RequestSeconds of their request latency (queued → finished), for
	// percentiles in Prometheus (histogram_quantile).
	DecodeSeconds  Histogram `json:"decode_seconds"`
	RequestSeconds Histogram `json:"request_seconds"`
	// Power is the meter's and the cap's state now.
	Power PowerGauges `json:"power"`
	// LastRun is the latest completed run (nil before the first).
	LastRun *LastRun `json:"last_run,omitempty"`
	// Window aggregates the runs that ended in the last Window.Seconds
	// (metrics.get's window_s, default DefaultMetricsWindow).
	Window WindowStats `json:"window"`
}

// WindowStats aggregate the runs that ended within a recent window.
type WindowStats struct {
	Seconds            float64          `json:"seconds"`
	Runs               int64            `json:"runs"`
	RunsByFinishReason map[string]int64 `json:"runs_by_finish_reason"`
	PromptTokens       int64            `json:"prompt_tokens"`
	PromptCachedTokens int64            `json:"prompt_cached_tokens"`
	GeneratedTokens    int64            `json:"generated_tokens"`
	// Per run: request latency (queued → finished), time to first token,
	// decode tokens/s; median (p50), p5, p95 by nearest rank.
	RequestLatencyMS      Spread `json:"request_latency_ms"`
	TTFTMS                Spread `json:"ttft_ms"`
	DecodeTokensPerSecond Spread `json:"decode_tokens_per_second"`
	// Generated tokens of the window's runs over the window's length: the
	// engine's throughput, all streams together.
	TokensPerSecond float64 `json:"tokens_per_second"`
}

// MetricsRequest is metrics.get's params (all optional).
type MetricsRequest struct {
	// Seconds of the window the aggregates cover (default 300, at most
	// 3600).
	WindowS float64 `json:"window_s,omitempty"`
}

// DefaultMetricsWindow is metrics.get's window when the call names none;
// MaxMetricsWindow is the longest (the runs of the last hour are kept).
const (
	DefaultMetricsWindow = 5 * time.Minute
	MaxMetricsWindow     = time.Hour
)

// runSample is what the window keeps of a finished run.
type runSample struct {
	end                      time.Time
	finish                   string
	prompt, cached, gen      int
	totalMS, ttftMS, decodeS float64 // decodeS: decode tokens/s (0: none)
}

// maxRunSamples bounds the window's memory (about 100 bytes a run).
const maxRunSamples = 100_000

// EnergyTotals are the counters of the runs metered with one source.
type EnergyTotals struct {
	Runs            int64   `json:"runs"`
	Joules          float64 `json:"joules"`
	GeneratedTokens int64   `json:"generated_tokens"`
	CPUSeconds      float64 `json:"cpu_seconds"` // worker-thread CPU time charged to the runs
	TokensPerJoule  float64 `json:"tokens_per_joule"`
}

// Histogram is a cumulative histogram: Counts[i] observations were ≤
// Bounds[i]; Count is the total (the +Inf bucket).
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
}

// PowerGauges are the power figures of metrics.get.
type PowerGauges struct {
	Source       string  `json:"source"`
	CurrentWatts float64 `json:"current_watts"`
	MeterJoules  float64 `json:"meter_joules"` // everything the meter counted since start (not only runs)
	CapWatts     float64 `json:"cap_watts"`    // 0: no cap
	CapEnforced  bool    `json:"cap_enforced"`
	QuotaCores   float64 `json:"quota_cores"` // CPU quota of the worker threads in cores; 0: unlimited
}

// LastRun identifies the latest run and its metrics.
type LastRun struct {
	RunID        string     `json:"run_id"`
	ModelID      string     `json:"model_id"`
	FinishReason string     `json:"finish_reason"`
	Metrics      RunMetrics `json:"metrics"`
}

// observe counts v in h.
func (h *Histogram) observe(v float64) {
	for i, b := range h.Bounds {
		if v <= b {
			h.Counts[i]++
		}
	}
	h.Count++
	h.Sum += v
}

func (h *Histogram) clone() Histogram {
	return Histogram{Bounds: append([]float64(nil), h.Bounds...), Counts: append([]uint64(nil), h.Counts...), Count: h.Count, Sum: h.Sum}
}

// DecodeBuckets are the upper bounds (seconds) of the decode-time and
// request-latency histograms.
var DecodeBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Finish reasons always present in the counters (at 0 before any run).
var finishReasons = []string{"length", "eos", "cancelled", "error"}

type metrics struct {
	mu       sync.Mutex
	start    time.Time
	runs     map[string]int64
	prompt   int64
	cached   int64
	gen      int64
	bySource map[string]*EnergyTotals
	decode   Histogram
	request  Histogram
	last     *LastRun
	recent   []runSample // runs that ended in the last MaxMetricsWindow, oldest first
}

// sample keeps res for the window (mu held).
func (m *metrics) sample(res *GenerateResult) {
	now := time.Now()
	mt := res.Metrics
	m.recent = append(m.recent, runSample{end: now, finish: res.FinishReason, prompt: mt.PromptTokens, cached: mt.PromptCachedTokens,
		gen: mt.GeneratedTokens, totalMS: mt.TotalMS, ttftMS: mt.TTFTMS, decodeS: mt.TokensPerSecond})
	drop := 0
	for drop < len(m.recent) && (now.Sub(m.recent[drop].end) > MaxMetricsWindow || len(m.recent)-drop > maxRunSamples) {
		drop++
	}
	// Reslicing drops the oldest; the backing array is compacted only
	// when append would grow it, so a steady state copies nothing per run.
	m.recent = m.recent[drop:]
	if len(m.recent) == cap(m.recent) {
		m.recent = append(make([]runSample, 0, 2*len(m.recent)+16), m.recent...)
	}
}

// window aggregates the runs that ended in the last d.
func (m *metrics) window(d time.Duration) WindowStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := WindowStats{Seconds: d.Seconds(), RunsByFinishReason: map[string]int64{}}
	for _, r := range finishReasons {
		w.RunsByFinishReason[r] = 0
	}
	since := time.Now().Add(-d)
	var lat, ttft, dec []float64
	for _, r := range m.recent {
		if r.end.Before(since) {
			continue
		}
		w.Runs++
		w.RunsByFinishReason[r.finish]++
		w.PromptTokens += int64(r.prompt)
		w.PromptCachedTokens += int64(r.cached)
		w.GeneratedTokens += int64(r.gen)
		lat = append(lat, r.totalMS)
		if r.gen > 0 {
			ttft = append(ttft, r.ttftMS)
		}
		if r.decodeS > 0 {
			dec = append(dec, r.decodeS)
		}
	}
	w.RequestLatencyMS, w.TTFTMS, w.DecodeTokensPerSecond = spread(lat), spread(ttft), spread(dec)
	if d > 0 {
		w.TokensPerSecond = float64(w.GeneratedTokens) / d.Seconds()
	}
	return w
}

func newMetrics() *metrics {
	m := &metrics{start: time.Now(), runs: map[string]int64{}, bySource: map[string]*EnergyTotals{}}
	for _, r := range finishReasons {
		m.runs[r] = 0
	}
	m.decode = Histogram{Bounds: DecodeBuckets, Counts: make([]uint64, len(DecodeBuckets))}
	m.request = Histogram{Bounds: DecodeBuckets, Counts: make([]uint64, len(DecodeBuckets))}
	return m
}

// record counts a completed run.
func (m *metrics) record(res *GenerateResult, metered bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs[res.FinishReason]++
	m.sample(res)
	mt := res.Metrics
	m.prompt += int64(mt.PromptTokens)
	m.cached += int64(mt.PromptCachedTokens)
	m.gen += int64(mt.GeneratedTokens)
	if metered && mt.EnergySource != "" {
		t := m.source(mt.EnergySource)
		t.Runs++
		t.Joules += mt.Joules
		t.GeneratedTokens += int64(mt.GeneratedTokens)
		t.CPUSeconds += mt.CPUSeconds
	}
	m.decode.observe(mt.DecodeMS / 1000)
	m.request.observe(mt.TotalMS / 1000)
	m.last = &LastRun{RunID: res.RunID, ModelID: res.ModelID, FinishReason: res.FinishReason, Metrics: mt}
	if mt.PowerCap != nil {
		pc := *mt.PowerCap
		m.last.Metrics.PowerCap = &pc
	}
}

// recordFailed counts a run that ended in an error, with the energy it used.
func (m *metrics) recordFailed(res *GenerateResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs[res.FinishReason]++
	m.sample(res)
	if src := res.Metrics.EnergySource; src != "" {
		t := m.source(src)
		t.Joules += res.Metrics.Joules
		t.CPUSeconds += res.Metrics.CPUSeconds
	}
}

func (m *metrics) source(src string) *EnergyTotals {
	t := m.bySource[src]
	if t == nil {
		t = &EnergyTotals{}
		m.bySource[src] = t
	}
	return t
}

func (m *metrics) snapshot(meterSource string) Counters {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := Counters{
		StartTime:            m.start,
		RunsByFinishReason:   make(map[string]int64, len(m.runs)),
		PromptTokens:         m.prompt,
		PromptCachedTokens:   m.cached,
		GeneratedTokens:      m.gen,
		Energy:               map[string]EnergyTotals{meterSource: {}},
		DecodeSeconds:        m.decode.clone(),
		RequestSeconds:       m.request.clone(),
		TokensPerJouleSource: meterSource,
	}
	for r, n := range m.runs {
		out.RunsByFinishReason[r] = n
		out.Runs += n
	}
	for src, t := range m.bySource {
		v := *t
		if v.Joules > 0 {
			v.TokensPerJoule = float64(v.GeneratedTokens) / v.Joules
		}
		out.Energy[src] = v
	}
	out.TokensPerJoule = out.Energy[meterSource].TokensPerJoule
	if m.last != nil {
		l := *m.last
		out.LastRun = &l
	}
	return out
}

// Sources returns the keys of Energy, sorted.
func (m Counters) Sources() []string {
	out := make([]string, 0, len(m.Energy))
	for s := range m.Energy {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Counters answers metrics.get: run and token counters, energy by source,
// tokens per joule, the decode-time histogram, the power gauges, the last
// run, and the aggregates of the last DefaultMetricsWindow.
func (e *Engine) Counters() Counters { return e.CountersWindow(DefaultMetricsWindow) }

// CountersWindow is Counters with the aggregates of the runs that ended in
// the last window (at most MaxMetricsWindow).
func (e *Engine) CountersWindow(window time.Duration) Counters {
	st := e.energy.status()
	out := e.energy.m.snapshot(st.Source)
	out.Window = e.energy.m.window(min(window, MaxMetricsWindow))
	out.Power = PowerGauges{
		Source:       st.Source,
		CurrentWatts: st.CurrentWatts,
		MeterJoules:  st.Joules,
		CapWatts:     st.CapWatts,
		CapEnforced:  st.CapEnforced,
		QuotaCores:   st.QuotaPercent / 100,
	}
	return out
}
