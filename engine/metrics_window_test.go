package engine

import (
	"testing"
	"time"
)

// TestMetricsWindow: metrics.get's window aggregates the runs that ended
// in it: counts, request latency and TTFT spreads, decode tokens/s, and the
// window's throughput; a window that ended before them holds none.
func TestMetricsWindow(t *testing.T) {
	e := newTestEngine(t, 1, PowerOptions{})
	path := sharedModel(t, "stories260K.gguf")
	var gen int64
	var maxTotal float64
	for i := 0; i < 5; i++ {
		r := generate(t, e, path, 8+i)
		gen += int64(r.Metrics.GeneratedTokens)
		maxTotal = max(maxTotal, r.Metrics.TotalMS)
	}
	w := e.CountersWindow(time.Minute).Window
	if w.Seconds != 60 || w.Runs != 5 || w.GeneratedTokens != gen || w.RunsByFinishReason["length"]+w.RunsByFinishReason["eos"] != 5 {
		t.Fatalf("window %+v; want 5 runs, %d tokens", w, gen)
	}
	if w.RequestLatencyMS.N != 5 || w.RequestLatencyMS.P95 != maxTotal || w.RequestLatencyMS.Median <= 0 || w.TTFTMS.N != 5 ||
		w.DecodeTokensPerSecond.N == 0 || w.TokensPerSecond != float64(gen)/60 {
		t.Fatalf("window aggregates %+v (max total_ms %g)", w, maxTotal)
	}
	c := e.Counters()
	if d := c.Window; d.Seconds != DefaultMetricsWindow.Seconds() || d.Runs != 5 {
		t.Fatalf("default window %+v", d)
	}
	if h := c.RequestSeconds; h.Count != 5 || h.Counts[len(h.Counts)-1] != 5 || h.Sum <= 0 {
		t.Fatalf("request-latency histogram %+v", h)
	}
	time.Sleep(20 * time.Millisecond)
	if w := e.CountersWindow(10 * time.Millisecond).Window; w.Runs != 0 || w.RequestLatencyMS.N != 0 {
		t.Fatalf("a window after the runs: %+v", w)
	}
	if w := e.CountersWindow(10 * time.Hour).Window; w.Seconds != MaxMetricsWindow.Seconds() || w.Runs != 5 {
		t.Fatalf("an over-long window: %+v", w)
	}
}
