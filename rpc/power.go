package rpc

import (
	"bytes"
	"context"
	"math"
	"time"

	"github.com/weos/llm-engine/engine"
)

// Power and metrics methods (issue 5).
const (
	MethodPowerStatus       = "power.status"
	MethodPowerSetCap       = "power.set_cap"
	MethodMetricsGet        = "metrics.get"
	MethodMetricsPrometheus = "metrics.prometheus"
)

// PowerEngine is implemented by engines with an energy meter and a power cap
// (*engine.Engine). The power and metrics methods answer -32040 (not
// implemented) for engines without it.
type PowerEngine interface {
	PowerStatus() engine.PowerStatus
	SetPowerCap(req engine.PowerCapRequest) (*engine.PowerStatus, error)
	Counters() engine.Counters
	CountersWindow(window time.Duration) engine.Counters
}

// SetCapParams is power.set_cap's params.
type SetCapParams = engine.PowerCapRequest

// PrometheusResult is metrics.prometheus's result: the text exposition
// (format version 0.0.4), for node_exporter's textfile collector or a
// scrape.
type PrometheusResult struct {
	ContentType string `json:"content_type"`
	Text        string `json:"text"`
}

func powerEngine(s *Service) (PowerEngine, error) {
	pe, ok := s.eng.(PowerEngine)
	if !ok {
		return nil, Errorf(engine.CodeNotImplemented, "this engine has no energy meter or power cap")
	}
	return pe, nil
}

func validateSetCap(p *SetCapParams) error {
	switch {
	case p.MaxWatts < 0 || math.IsNaN(p.MaxWatts) || math.IsInf(p.MaxWatts, 0):
		return InvalidParams(`field "max_watts": must be >= 0`)
	case p.Enforcement != "" && p.Enforcement != engine.EnforceStrict && p.Enforcement != engine.EnforceBestEffort:
		return InvalidParams(`field "enforcement": must be "strict" or "best_effort"`)
	}
	return nil
}

// powerMethods are the power and metrics entries of the method table.
func powerMethods() []*Method {
	status := method(MethodPowerStatus, "Show the energy meter and the power cap.",
		"The meter's source (rapl: a measurement; estimate: a model of CPU time, never a measurement), "+
			"current watts, the recent samples, the cap in force, the worker threads' CPU quota, "+
			"whether the cap is enforced and how (or why not).",
		nil,
		func(ctx context.Context, s *Service, _ *NoParams, _ Notifier) (engine.PowerStatus, error) {
			pe, err := powerEngine(s)
			if err != nil {
				return engine.PowerStatus{}, err
			}
			return pe.PowerStatus(), nil
		})

	setCap := method(MethodPowerSetCap, "Set the operator's power cap.",
		"Keeps the inference worker threads' average power at or below max_watts by a CPU quota on their "+
			"cgroup (closed loop on RAPL, open loop through the estimator); 0 lifts the cap. Runs are capped "+
			"at the lower of this cap and their plan's limits.max_watts. With enforcement strict (default) "+
			"a cap this host cannot enforce is refused (-32040, with the reason); with best_effort it is "+
			"recorded and reported as not enforced. Returns power.status.",
		validateSetCap,
		func(ctx context.Context, s *Service, p *SetCapParams, _ Notifier) (*engine.PowerStatus, error) {
			pe, err := powerEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.SetPowerCap(*p)
		})
	setCap.Mutating = true

	get := method(MethodMetricsGet, "Get the engine's counters.",
		"Runs by finish reason, prompt and generated tokens, joules and tokens per joule by energy source, "+
			"the decode-time histogram, the power gauges, the last run's metrics, and the aggregates of the runs "+
			"that ended in the last window_s seconds (default 300, at most 3600): counts, request latency, "+
			"time to first token and decode tokens/s (p50 = median, p5, p95), tokens per second over the window.",
		func(p *engine.MetricsRequest) error {
			if p.WindowS < 0 || p.WindowS > engine.MaxMetricsWindow.Seconds() || math.IsNaN(p.WindowS) {
				return InvalidParams(`field "window_s": must be from 0 to %g`, engine.MaxMetricsWindow.Seconds())
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *engine.MetricsRequest, _ Notifier) (engine.Counters, error) {
			pe, err := powerEngine(s)
			if err != nil {
				return engine.Counters{}, err
			}
			w := engine.DefaultMetricsWindow
			if p.WindowS > 0 {
				w = time.Duration(p.WindowS * float64(time.Second))
			}
			return pe.CountersWindow(w), nil
		})

	prom := method(MethodMetricsPrometheus, "Get the counters as a Prometheus text exposition.",
		"metrics.get in the Prometheus text format 0.0.4 (llm_engine_* series; energy series carry a "+
			"source label), e.g. for node_exporter's textfile collector.",
		nil,
		func(ctx context.Context, s *Service, _ *NoParams, _ Notifier) (PrometheusResult, error) {
			pe, err := powerEngine(s)
			if err != nil {
				return PrometheusResult{}, err
			}
			var b bytes.Buffer
			if err := WritePrometheus(&b, pe.Counters()); err != nil {
				return PrometheusResult{}, err
			}
			return PrometheusResult{ContentType: PrometheusContentType, Text: b.String()}, nil
		})
	return []*Method{status, setCap, get, prom}
}
