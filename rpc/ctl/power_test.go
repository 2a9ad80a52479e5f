package ctl_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/power"
)

func storiesModel(t *testing.T) string {
	for _, d := range []string{os.Getenv("LLM_ENGINE_SHARED"), "../../../shared", "/work/shared"} {
		if p := filepath.Join(d, "models", "stories260K.gguf"); d != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	msg := "SKIPPING " + t.Name() + ": stories260K.gguf not found (set LLM_ENGINE_SHARED)"
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
	return ""
}

// enginectl power and metrics against the real engine (estimate meter, a
// cgroup root without a cpu controller: caps cannot be enforced).
func TestPowerAndMetricsCommands(t *testing.T) {
	path := storiesModel(t)
	eng, err := engine.New(engine.Options{Threads: 1, Power: engine.PowerOptions{
		Meter: "estimate", Cgroup: power.CapperConfig{Version: 1, Root: t.TempDir()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	s := daemontest.Start(t, daemon.Config{}, eng)
	sock := "--socket=" + s.Path

	r := run(nil, sock, "power")
	for _, want := range []string{"source:", "estimate (an estimate, not a measurement)", "cap:", "none", "cpu quota:", "unlimited", "can cap:", "no: cgroup v1: no cpu controller", "worker threads:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("power: missing %q in\n%s", want, r.stdout)
		}
	}
	if r.code != 0 {
		t.Fatalf("power: %+v", r)
	}
	r = run(nil, sock, "power", "--set-cap", "3")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot be enforced on this host") || !strings.HasSuffix(r.stderr, "(code -32040)\n") {
		t.Fatalf("power --set-cap strict: %+v", r)
	}
	r = run(nil, sock, "--json", "power", "--set-cap", "3", "--best-effort")
	var st engine.PowerStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.CapWatts != 3 || st.CapEnforced || st.Enforcement != "best_effort" {
		t.Fatalf("power --set-cap --best-effort: %+v", r)
	}
	r = run(nil, sock, "power")
	if r.code != 0 || !strings.Contains(r.stdout, "3 W (best_effort), NOT ENFORCED") || !strings.Contains(r.stdout, "cap not enforced: ") {
		t.Fatalf("power after best-effort cap: %+v", r)
	}
	for _, bad := range [][]string{{"power", "--best-effort"}, {"power", "--set-cap", "-1"}, {"--json", "metrics", "--prometheus"}} {
		if r := run(nil, append([]string{sock}, bad...)...); r.code != 2 {
			t.Errorf("%v: %+v", bad, r)
		}
	}

	r = run(nil, sock, "--json", "generate", "-m", path, "-p", "Once upon a time", "-n", "16")
	var res engine.GenerateResult
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || res.Metrics.EnergySource != "estimate" || res.Metrics.Joules <= 0 || res.Metrics.PowerCap == nil {
		t.Fatalf("generate: %+v", r)
	}

	r = run(nil, sock, "metrics")
	for _, want := range []string{"runs:", "1 (cancelled 0, eos 0, error 0, length 1)", "generated 16", "energy (estimate):", "tokens/J", "last run:", res.RunID,
		"last 5m0s:", "1 runs (length 1), 16 tokens generated", "request latency:", "p95"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("metrics: missing %q in\n%s", want, r.stdout)
		}
	}
	r = run(nil, sock, "--json", "metrics", "--window", "90s")
	var c engine.Counters
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &c) != nil || c.Runs != 1 || c.GeneratedTokens != 16 || c.Energy["estimate"].Joules != res.Metrics.Joules || c.LastRun.RunID != res.RunID ||
		c.Window.Seconds != 90 || c.Window.Runs != 1 || c.Window.RequestLatencyMS.N != 1 {
		t.Fatalf("metrics --json: %+v", r)
	}
	if r = run(nil, sock, "metrics", "--window", "2h"); r.code != 2 {
		t.Errorf("metrics --window 2h: %+v", r)
	}
	r = run(nil, sock, "metrics", "--prometheus")
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(r.stdout))
	if r.code != 0 || err != nil {
		t.Fatalf("metrics --prometheus: %v %+v", err, r)
	}
	if f := fams["llm_engine_generated_tokens_total"]; f == nil || f.GetMetric()[0].GetCounter().GetValue() != 16 {
		t.Errorf("llm_engine_generated_tokens_total: %v", f)
	}
	if f := fams["llm_engine_energy_joules_total"]; f == nil || f.GetMetric()[0].GetLabel()[0].GetValue() != "estimate" {
		t.Errorf("llm_engine_energy_joules_total: %v", f)
	}
	if f := fams["llm_engine_power_cap_watts"]; f == nil || f.GetMetric()[0].GetGauge().GetValue() != 3 {
		t.Errorf("llm_engine_power_cap_watts: %v", f)
	}
}
