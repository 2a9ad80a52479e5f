package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weos/llm-engine/engine"
)

func sampleMetrics() engine.Counters {
	return engine.Counters{
		StartTime:          time.Unix(1_700_000_000, 500_000_000),
		Runs:               4,
		RunsByFinishReason: map[string]int64{"length": 2, "eos": 1, "cancelled": 0, "error": 1, "we\"ird\\\nreason": 0},
		PromptTokens:       40,
		PromptCachedTokens: 12,
		GeneratedTokens:    300,
		Energy: map[string]engine.EnergyTotals{
			"estimate": {Runs: 2, Joules: 1.5, GeneratedTokens: 200, CPUSeconds: 0.15, TokensPerJoule: 200 / 1.5},
			"rapl":     {Runs: 1, Joules: 2, GeneratedTokens: 100, CPUSeconds: 0.1, TokensPerJoule: 50},
		},
		DecodeSeconds:  engine.Histogram{Bounds: []float64{0.1, 1, 10}, Counts: []uint64{1, 2, 3}, Count: 3, Sum: 4.2},
		RequestSeconds: engine.Histogram{Bounds: []float64{0.1, 1, 10}, Counts: []uint64{0, 2, 3}, Count: 3, Sum: 5.5},
		Power:          engine.PowerGauges{Source: "estimate", CurrentWatts: 3.5, MeterJoules: 12.25, CapWatts: 3, CapEnforced: true, QuotaCores: 0.3},
	}
}

func parseProm(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("expfmt cannot parse the exposition: %v\n%s", err, text)
	}
	return fams
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// value of the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no family %s", name)
	}
outer:
	for _, m := range f.GetMetric() {
		got := labelsOf(m)
		for k, v := range want {
			if got[k] != v {
				continue outer
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s: no sample with labels %v", name, want)
	return 0
}

// The exposition parses with the official parser (expfmt) and has every
// named series, with the source label on energy series.
func TestPrometheusParses(t *testing.T) {
	var b bytes.Buffer
	if err := WritePrometheus(&b, sampleMetrics()); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	fams := parseProm(t, text)
	types := map[string]dto.MetricType{
		"llm_engine_runs_total":                     dto.MetricType_COUNTER,
		"llm_engine_prompt_tokens_total":            dto.MetricType_COUNTER,
		"llm_engine_prompt_cached_tokens_total":     dto.MetricType_COUNTER,
		"llm_engine_generated_tokens_total":         dto.MetricType_COUNTER,
		"llm_engine_energy_joules_total":            dto.MetricType_COUNTER,
		"llm_engine_metered_generated_tokens_total": dto.MetricType_COUNTER,
		"llm_engine_run_cpu_seconds_total":          dto.MetricType_COUNTER,
		"llm_engine_tokens_per_joule":               dto.MetricType_GAUGE,
		"llm_engine_meter_joules_total":             dto.MetricType_COUNTER,
		"llm_engine_power_watts":                    dto.MetricType_GAUGE,
		"llm_engine_power_cap_watts":                dto.MetricType_GAUGE,
		"llm_engine_power_cap_enforced":             dto.MetricType_GAUGE,
		"llm_engine_cpu_quota_ratio":                dto.MetricType_GAUGE,
		"llm_engine_decode_seconds":                 dto.MetricType_HISTOGRAM,
		"llm_engine_request_seconds":                dto.MetricType_HISTOGRAM,
		"llm_engine_start_time_seconds":             dto.MetricType_GAUGE,
	}
	for name, typ := range types {
		f, ok := fams[name]
		if !ok {
			t.Errorf("missing family %s", name)
			continue
		}
		if f.GetType() != typ || f.GetHelp() == "" {
			t.Errorf("%s: type %v help %q", name, f.GetType(), f.GetHelp())
		}
	}
	if len(fams) != len(types) {
		t.Errorf("%d families, want %d", len(fams), len(types))
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"llm_engine_runs_total", map[string]string{"finish_reason": "length"}, 2},
		{"llm_engine_runs_total", map[string]string{"finish_reason": "error"}, 1},
		{"llm_engine_runs_total", map[string]string{"finish_reason": "we\"ird\\\nreason"}, 0}, // escaping round-trips
		{"llm_engine_generated_tokens_total", nil, 300},
		{"llm_engine_prompt_tokens_total", nil, 40},
		{"llm_engine_prompt_cached_tokens_total", nil, 12},
		{"llm_engine_energy_joules_total", map[string]string{"source": "estimate"}, 1.5},
		{"llm_engine_energy_joules_total", map[string]string{"source": "rapl"}, 2},
		{"llm_engine_metered_generated_tokens_total", map[string]string{"source": "rapl"}, 100},
		{"llm_engine_tokens_per_joule", map[string]string{"source": "rapl"}, 50},
		{"llm_engine_power_watts", map[string]string{"source": "estimate"}, 3.5},
		{"llm_engine_meter_joules_total", map[string]string{"source": "estimate"}, 12.25},
		{"llm_engine_power_cap_watts", nil, 3},
		{"llm_engine_power_cap_enforced", nil, 1},
		{"llm_engine_cpu_quota_ratio", nil, 0.3},
		{"llm_engine_start_time_seconds", nil, 1_700_000_000.5},
	} {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	h := fams["llm_engine_decode_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 4.2 || len(h.GetBucket()) != 4 || h.GetBucket()[1].GetUpperBound() != 1 || h.GetBucket()[1].GetCumulativeCount() != 2 {
		t.Errorf("histogram %v", h)
	}
	if !strings.HasSuffix(text, "\n") || strings.Count(text, "# TYPE llm_engine_runs_total ") != 1 {
		t.Errorf("format:\n%s", text)
	}
}

type powerFake struct{ nopEngine }

func (powerFake) PowerStatus() engine.PowerStatus { return engine.PowerStatus{Source: "estimate"} }
func (powerFake) SetPowerCap(req engine.PowerCapRequest) (*engine.PowerStatus, error) {
	return &engine.PowerStatus{Source: "estimate", CapWatts: req.MaxWatts, Enforcement: req.Enforcement}, nil
}
func (powerFake) Counters() engine.Counters { return sampleMetrics() }
func (powerFake) CountersWindow(w time.Duration) engine.Counters {
	c := sampleMetrics()
	c.Window.Seconds = w.Seconds()
	return c
}

func TestPowerMethods(t *testing.T) {
	ctx := context.Background()
	s := NewService(powerFake{})
	res, err := s.Call(ctx, MethodMetricsPrometheus, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pr := res.(PrometheusResult)
	if pr.ContentType != PrometheusContentType {
		t.Errorf("content type %q", pr.ContentType)
	}
	parseProm(t, pr.Text)
	if _, err := s.Call(ctx, MethodMetricsGet, json.RawMessage(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	res, err = s.Call(ctx, MethodMetricsGet, nil, nil)
	if err != nil || res.(engine.Counters).Window.Seconds != engine.DefaultMetricsWindow.Seconds() {
		t.Fatalf("metrics.get without params: %v %+v", err, res)
	}
	res, err = s.Call(ctx, MethodMetricsGet, json.RawMessage(`{"window_s": 60}`), nil)
	if err != nil || res.(engine.Counters).Window.Seconds != 60 {
		t.Fatalf("metrics.get window_s 60: %v %+v", err, res)
	}
	for _, params := range []string{`{"window_s": -1}`, `{"window_s": 3601}`, `{"window_s": "60"}`, `{"window": 60}`} {
		if _, err := s.Call(ctx, MethodMetricsGet, json.RawMessage(params), nil); err == nil || err.(*Error).Code != CodeInvalidParams {
			t.Errorf("metrics.get %s: %v, want invalid params", params, err)
		}
	}
	res, err = s.Call(ctx, MethodPowerSetCap, json.RawMessage(`{"max_watts": 3, "enforcement": "best_effort"}`), nil)
	if st := res.(*engine.PowerStatus); err != nil || st.CapWatts != 3 || st.Enforcement != "best_effort" {
		t.Fatalf("set_cap: %v %+v", err, res)
	}
	for params, want := range map[string]string{
		`{}`:                                   `missing required field "max_watts"`,
		`{"max_watts": -1}`:                    `field "max_watts": must be >= 0`,
		`{"max_watts": 1, "enforcement": "x"}`: `field "enforcement"`,
		`{"max_watts": "3"}`:                   `field "max_watts": expected number`,
	} {
		_, err := s.Call(ctx, MethodPowerSetCap, json.RawMessage(params), nil)
		if e, ok := err.(*Error); !ok || e.Code != CodeInvalidParams || !strings.Contains(e.Message, want) {
			t.Errorf("%s: %v, want %q", params, err, want)
		}
	}
	for _, m := range Methods() {
		if m.Name == MethodPowerSetCap && !m.Mutating {
			t.Error("power.set_cap is not Mutating")
		}
		if (m.Name == MethodPowerStatus || m.Name == MethodMetricsGet || m.Name == MethodMetricsPrometheus) && m.Mutating {
			t.Errorf("%s is Mutating", m.Name)
		}
	}
	// An engine without a meter: -32040.
	_, err = NewService(nopEngine{}).Call(ctx, MethodPowerStatus, nil, nil)
	if e, ok := err.(*Error); !ok || e.Code != engine.CodeNotImplemented {
		t.Errorf("power.status on an engine without power: %v", err)
	}
}
