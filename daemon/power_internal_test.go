package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/weos/llm-engine/engine"
)

func TestCheckMetricsListen(t *testing.T) {
	for addr, ok := range map[string]bool{
		"":                 true,
		"127.0.0.1:9464":   true,
		"127.8.9.10:1":     true,
		"[::1]:9464":       true,
		"localhost:9464":   true,
		"0.0.0.0:9464":     false,
		":9464":            false,
		"192.168.1.2:9464": false,
		"example.com:9464": false,
		"127.0.0.1":        false,
		"127.0.0.1:0":      false,
		"127.0.0.1:http":   false,
		"127.0.0.1:70000":  false,
	} {
		if err := checkMetricsListen(addr); (err == nil) != ok {
			t.Errorf("%q: %v", addr, err)
		}
	}
	fc, err := ParseConfig("engine.json", []byte(`{"metrics_listen": "0.0.0.0:9464", "power": {"meter": "estimate", "allow_estimate": false, "watts_per_busy_core": 7, "max_watts": 12, "enforcement": "best_effort"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fc.Resolve("engine.json", func(string) string { return "/h" }); err == nil || !strings.Contains(err.Error(), "at /metrics_listen:") || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("non-loopback metrics_listen: %v", err)
	}
	fc.MetricsListen = "127.0.0.1:9464"
	s, err := fc.Resolve("engine.json", func(string) string { return "/h" })
	if err != nil {
		t.Fatal(err)
	}
	want := engine.PowerOptions{Meter: "estimate", NoEstimateFallback: true, WattsPerBusyCore: 7, MaxWatts: 12, Enforcement: "best_effort"}
	if s.Power != want || s.MetricsListen != "127.0.0.1:9464" {
		t.Errorf("settings: %+v %q", s.Power, s.MetricsListen)
	}
	for _, bad := range []string{`{"power": {"meter": "gpu"}}`, `{"power": {"watts_per_busy_core": 0}}`, `{"power": {"max_watts": -1}}`, `{"power": {"enforcement": "maybe"}}`, `{"power": {"max_wats": 1}}`} {
		if _, err := ParseConfig("engine.json", []byte(bad)); err == nil || !strings.Contains(err.Error(), "/power") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// The /metrics endpoint serves the engine's counters in the Prometheus text
// format; an engine without metrics gets no endpoint.
func TestMetricsEndpoint(t *testing.T) {
	eng, err := engine.New(engine.Options{Threads: 1, Power: engine.PowerOptions{Meter: "estimate"}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	stop, err := startMetrics(addr, eng, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") ||
		!strings.Contains(string(body), `llm_engine_energy_joules_total{source="estimate"} 0`) {
		t.Fatalf("GET /metrics: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, err = http.Post("http://"+addr+"/metrics", "text/plain", nil)
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	if resp, err := http.Get("http://" + addr + "/other"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET /other: %v %v", err, resp.Status)
	}
	if _, err := startMetrics("0.0.0.0:1", eng, log); err == nil {
		t.Error("non-loopback address accepted")
	}
	stopFake, err := startMetrics(addr, noPowerEngine{}, log)
	if err != nil {
		t.Fatal(err)
	}
	stopFake()
}

// noPowerEngine is an rpc.Engine without energy meter nor counters.
type noPowerEngine struct{}

func (noPowerEngine) Info() engine.Info { return engine.Info{} }
func (noPowerEngine) LoadModel(context.Context, engine.LoadRequest) (*engine.ModelInfo, error) {
	return nil, nil
}
func (noPowerEngine) ListModels() []engine.ModelInfo { return nil }
func (noPowerEngine) UnloadModel(string) error       { return nil }
func (noPowerEngine) Generate(context.Context, engine.GenerateRequest, func(engine.TokenEvent)) (*engine.GenerateResult, error) {
	return nil, nil
}
