package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for llm-bench when the benchmark
// re-executes itself for a configuration.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestBenchSynthTiny(t *testing.T) {
	dir := t.TempDir()
	cmp := filepath.Join(dir, "ref.json")
	if err := os.WriteFile(cmp, []byte(`{"machine": "x", "Q4_K_M": {"t1": {"pp8": 100, "tg4": 50}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func() []result {
		t.Helper()
		c := benchCmd{Synth: "tiny", Seed: 1, Quant: []string{"source", "Q4_K_M"}, Prompt: []int{8}, Gen: []int{4},
			Threads: []int{1, 2}, Reps: 2, Output: "json", CacheDir: dir, Compare: cmp, Quiet: true,
			SaveJSON: filepath.Join(dir, "out", "results.json"), SaveMD: filepath.Join(dir, "out", "results.md")}
		stdout := os.Stdout
		os.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		err := c.Run()
		os.Stdout = stdout
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(c.SaveJSON)
		if err != nil {
			t.Fatal(err)
		}
		var rows []result
		if err := json.Unmarshal(b, &rows); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	rows := run()
	if len(rows) != 2*2*2 {
		t.Fatalf("%d rows, want 8", len(rows))
	}
	for _, r := range rows {
		if r.AvgTS <= 0 || len(r.Samples) != 2 || r.PeakRSS <= 0 || r.WeightBytes <= 0 || r.KVBytes <= 0 || r.Model != "tiny-synth" {
			t.Errorf("row %+v", r)
		}
		wantRef := r.Quant == "Q4_K_M" && r.Threads == 1
		if (r.LlamaCppTS > 0) != wantRef || wantRef && r.Ratio <= 0 {
			t.Errorf("%s t%d %s: llama.cpp %v ratio %v", r.Quant, r.Threads, r.Test, r.LlamaCppTS, r.Ratio)
		}
	}
	if rows[0].WeightBytes <= 3*rows[4].WeightBytes {
		t.Errorf("weights: source (F32) %d, Q4_K_M %d", rows[0].WeightBytes, rows[4].WeightBytes)
	}
	md, err := os.ReadFile(filepath.Join(dir, "out", "results.md"))
	if err != nil || !strings.Contains(string(md), "| tiny-synth | Q4_K_M |") || !strings.Contains(string(md), "llama.cpp t/s") {
		t.Errorf("markdown:\n%s", md)
	}
	// The synthetic model and the quantized weights are reused.
	models, _ := filepath.Glob(filepath.Join(dir, "synth", "*.gguf"))
	entries, _ := filepath.Glob(filepath.Join(dir, "quant", "*.gguf"))
	if len(models) != 1 || len(entries) != 1 {
		t.Fatalf("cache holds models %v, entries %v", models, entries)
	}
	st, _ := os.Stat(models[0])
	run()
	st2, _ := os.Stat(models[0])
	if !st.ModTime().Equal(st2.ModTime()) {
		t.Error("the synthetic model was written again")
	}
}

func TestBenchErrors(t *testing.T) {
	for _, c := range []struct {
		cmd  benchCmd
		want string
	}{
		{benchCmd{Reps: 3}, "no model"},
		{benchCmd{Reps: 0, Model: "x"}, "-r"},
		{benchCmd{Reps: 1, Model: "x", Synth: "tiny"}, "not both"},
		{benchCmd{Reps: 1, Synth: "nope"}, "unknown --synth preset"},
		{benchCmd{Reps: 1, Model: "x", Threads: []int{0}}, "thread counts"},
	} {
		c.cmd.CacheDir = t.TempDir()
		err := c.cmd.Run()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cmd, err, c.want)
		}
	}
}

func TestVmHWM(t *testing.T) {
	n, err := vmHWM()
	if err != nil || n < 1<<20 {
		t.Errorf("VmHWM %d, %v", n, err)
	}
}

// TestBenchDepthKV: -d runs the tests after that many tokens (named
// pp4@d16, tg4@d16), --kv F16 halves the KV bytes reported.
func TestBenchDepthKV(t *testing.T) {
	dir := t.TempDir()
	run := func(kv string, depth int) ([]result, error) {
		t.Helper()
		c := benchCmd{Synth: "tiny", Seed: 1, Quant: []string{"source"}, Prompt: []int{4}, Gen: []int{4}, Threads: []int{1},
			Reps: 1, Output: "json", CacheDir: dir, Quiet: true, KV: kv, Depth: depth, SaveJSON: filepath.Join(dir, kv+".json")}
		stdout := os.Stdout
		os.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		err := c.Run()
		os.Stdout = stdout
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(c.SaveJSON)
		if err != nil {
			t.Fatal(err)
		}
		var rows []result
		if err := json.Unmarshal(b, &rows); err != nil {
			t.Fatal(err)
		}
		return rows, nil
	}
	f32, err := run("F32", 16)
	if err != nil {
		t.Fatal(err)
	}
	f16, err := run("F16", 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(f32) != 2 || len(f16) != 2 || f16[0].Test != "pp4@d16" || f16[1].Test != "tg4@d16" || f16[0].KVType != "F16" || f32[0].KVType != "F32" {
		t.Fatalf("rows F32 %+v, F16 %+v", f32, f16)
	}
	if f16[0].KVBytes*2 != f32[0].KVBytes || f16[1].AvgTS <= 0 {
		t.Errorf("KV bytes F16 %d, F32 %d: want half", f16[0].KVBytes, f32[0].KVBytes)
	}
	if _, err := run("F16", 1<<20); err == nil {
		t.Error("a depth beyond the model's context was accepted")
	}
	// --cpuprofile: one profile per configuration.
	c := benchCmd{Synth: "tiny", Seed: 1, Quant: []string{"source"}, Prompt: []int{4}, Gen: []int{4}, Threads: []int{1},
		Reps: 1, Output: "json", CacheDir: dir, Quiet: true, CPUProfile: filepath.Join(dir, "prof")}
	stdout := os.Stdout
	os.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	err = c.Run()
	os.Stdout = stdout
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "prof.source.t1.pprof")); err != nil || st.Size() == 0 {
		t.Errorf("no CPU profile: %v", err)
	}
}
