package e2e_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/kernels"
	"github.com/weos/llm-engine/rpc/ctl"
)

// TestModelLoadProgress: model.load reports its phases to the caller as
// model.progress notifications (quantization at load, then repacking to
// the x8 layout), each phase's fraction rising to 1; enginectl load shows
// them (lines when stderr is not a terminal).
func TestModelLoadProgress(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{Threads: 2})
	c := dial(t, r.srv.Path)
	var evs []engine.ModelLoadingEvent
	plan := map[string]any{"quantization": map[string]any{"default": "Q4_K_M"}, "weight_layout": "x8", "backend": bestBackend()}
	mi, err := c.LoadModelProgress(ctxT(t, time.Minute), engine.LoadRequest{Path: sharedModel(t, "synth-256-F32.gguf"), Plan: plan},
		func(ev engine.ModelLoadingEvent) { evs = append(evs, ev) })
	if err != nil {
		t.Fatal(err)
	}
	if mi.WeightLayout != "x8" || mi.RepackedMatrix == 0 {
		t.Fatalf("model info: layout %q, %d repacked", mi.WeightLayout, mi.RepackedMatrix)
	}
	phases := map[string][]engine.ModelLoadingEvent{}
	var order []string
	for _, ev := range evs {
		if len(phases[ev.Phase]) == 0 {
			order = append(order, ev.Phase)
		}
		phases[ev.Phase] = append(phases[ev.Phase], ev)
	}
	want := []string{"quantize"}
	if bestBackend() == "cpu-avx2" {
		want = append(want, "repack")
	}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Fatalf("phases %v, want %v", order, want)
	}
	for ph, es := range phases {
		for i := 1; i < len(es); i++ {
			if es[i].Done < es[i-1].Done || es[i].Total != es[0].Total {
				t.Fatalf("%s: progress went back: %+v then %+v", ph, es[i-1], es[i])
			}
		}
		if last := es[len(es)-1]; last.Done != last.Total || last.Fraction != 1 || last.Total <= 0 {
			t.Fatalf("%s: last event %+v", ph, last)
		}
	}
	t.Logf("%d notifications: %v", len(evs), order)

	// enginectl: not a terminal, so a line per 10% of each phase.
	var stdout, stderr bytes.Buffer
	code := ctl.Main(context.Background(), []string{"--socket", r.srv.Path, "load", sharedModel(t, "synth-256-F32.gguf"),
		"--plan", `{"quantization":{"default":"Q6_K"}}`}, &stdout, &stderr, func(string) string { return "" })
	if code != 0 || !strings.HasPrefix(stdout.String(), "loaded ") {
		t.Fatalf("enginectl load: %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "quantizing at load: 100%") {
		t.Fatalf("no progress lines:\n%s", stderr.String())
	}
}

func bestBackend() string {
	if kernels.HasAVX2 {
		return kernels.AVX2BackendName
	}
	return kernels.GenericBackendName
}
