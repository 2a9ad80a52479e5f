package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/model"
	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/engine/synth"
	"github.com/weos/llm-engine/internal/progress"
	"github.com/weos/llm-engine/kernels"
)

type benchCmd struct {
	Model      string   `short:"m" help:"GGUF model file." type:"path"`
	Synth      string   `name:"synth" help:"Benchmark the seeded synthetic model of this shape (${presets}), written once into the cache directory." placeholder:"PRESET"`
	Seed       uint64   `help:"PRNG seed of the --synth model's weights." default:"1"`
	Quant      []string `short:"q" help:"Quantization schemes, each a run-time plan parameter: source, F32, F16, Q8_0, Q6_K, Q4_K_M." default:"source" placeholder:"TYPE"`
	Prompt     []int    `short:"p" help:"Prompt lengths (pp tests; 0 skips)." default:"64"`
	Gen        []int    `short:"n" help:"Generation lengths (tg tests; 0 skips)." default:"32"`
	Threads    []int    `short:"t" help:"Worker thread counts (default: the number of CPUs)."`
	Reps       int      `short:"r" help:"Repetitions of each test." default:"3"`
	Output     string   `short:"o" help:"Output format on stdout: md or json." enum:"md,json" default:"md"`
	Backend    string   `help:"Kernel backend: cpu-avx2 or cpu-generic (default: the best this CPU runs)."`
	Layout     string   `help:"Weight layout, a plan parameter: x8 (repacked at load) or rows (the file's layout) (default: the plan's, x8 on cpu-avx2)." enum:",x8,rows" default:""`
	KV         string   `name:"kv" help:"KV cache element type, a plan parameter (kv_cache.type): F32 or F16." enum:"F32,F16" default:"F32"`
	CPUProfile string   `name:"cpuprofile" help:"Write a CPU profile of the measured tests (not the load) of each configuration to FILE.QUANT.tT.pprof (go tool pprof)." type:"path" placeholder:"FILE"`
	Depth      int      `short:"d" help:"Tokens already in the KV cache when each test starts (llama-bench's -d): tests named e.g. tg32@d1024; the prefill is not timed." default:"0"`
	CacheDir   string   `help:"Cache directory for synthetic models and quantized weights (default: $XDG_CACHE_HOME/llm-engine or ~/.cache/llm-engine)." type:"path"`
	Compare    string   `help:"llama.cpp figures to compare with (../shared/BENCH-1B.json's format)." type:"path"`
	SaveJSON   string   `help:"Also write the results as JSON to this file." type:"path"`
	SaveMD     string   `help:"Also write the results as a markdown table to this file." type:"path"`
	Quiet      bool     `help:"No progress bars."`

	Child bool `hidden:"" help:"Run one configuration and print its result as JSON (used by the parent process)."`
}

// configResult is what a child reports for one (quant, threads)
// configuration.
type configResult struct {
	Model       string    `json:"model"`
	File        string    `json:"file"`
	Quant       string    `json:"quant"`
	Backend     string    `json:"backend"`
	Layout      string    `json:"weight_layout"`
	KVType      string    `json:"kv_cache"`
	Threads     int       `json:"threads"`
	Params      int64     `json:"params"`
	WeightBytes int64     `json:"weight_bytes"`
	KVBytes     int64     `json:"kv_bytes"`
	PeakRSS     int64     `json:"peak_rss_bytes"`
	LoadMS      float64   `json:"load_ms"`
	CachePath   string    `json:"quant_cache,omitempty"`
	Tests       []testRun `json:"tests"`
}

type testRun struct {
	Test    string    `json:"test"` // pp64, tg32
	NPrompt int       `json:"n_prompt"`
	NGen    int       `json:"n_gen"`
	Samples []float64 `json:"samples_ts"`
}

// result is one row of the output: a test of a configuration.
type result struct {
	Model       string    `json:"model"`
	File        string    `json:"file"`
	Quant       string    `json:"quant"`
	Backend     string    `json:"backend"`
	Layout      string    `json:"weight_layout"`
	KVType      string    `json:"kv_cache"`
	Threads     int       `json:"threads"`
	Params      int64     `json:"params"`
	WeightBytes int64     `json:"weight_bytes"`
	KVBytes     int64     `json:"kv_bytes"`
	Test        string    `json:"test"`
	NPrompt     int       `json:"n_prompt"`
	NGen        int       `json:"n_gen"`
	Samples     []float64 `json:"samples_ts"`
	AvgTS       float64   `json:"avg_ts"`
	StddevTS    float64   `json:"stddev_ts"`
	PeakRSS     int64     `json:"peak_rss_bytes"`
	// PeakRSS / (WeightBytes + KVBytes): the memory target is ≤ 1.15.
	RSSRatio float64 `json:"rss_over_weights_kv"`
	LoadMS   float64 `json:"load_ms"`
	// llama.cpp's figure for the same quantization, threads and test
	// (--compare), and ours over it.
	LlamaCppTS float64 `json:"llamacpp_ts,omitempty"`
	Ratio      float64 `json:"ratio_vs_llamacpp,omitempty"`
}

func (c *benchCmd) Run() error {
	if c.Reps < 1 {
		return errors.New("-r must be at least 1")
	}
	if c.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("no cache directory (set --cache-dir): %w", err)
		}
		c.CacheDir = filepath.Join(d, "llm-engine")
	}
	if len(c.Threads) == 0 {
		c.Threads = []int{runtime.NumCPU()}
	}
	for _, t := range c.Threads {
		if t < 1 {
			return fmt.Errorf("-t %d: thread counts must be positive", t)
		}
	}
	if c.Child {
		return c.runChild()
	}
	if c.Synth != "" {
		if c.Model != "" {
			return errors.New("give either -m or --synth, not both")
		}
		path, err := c.synthModel()
		if err != nil {
			return err
		}
		c.Model = path
	}
	if c.Model == "" {
		return errors.New("no model: give -m FILE or --synth PRESET")
	}
	// Quantize once, here, so that children only map the cached weights.
	for _, q := range c.Quant {
		if err := c.prepare(q); err != nil {
			return err
		}
	}
	var cmp map[string]map[string]map[string]float64
	if c.Compare != "" {
		var err error
		if cmp, err = readCompare(c.Compare); err != nil {
			return err
		}
	}
	var rows []result
	for _, q := range c.Quant {
		for _, t := range c.Threads {
			cr, err := c.spawn(q, t)
			if err != nil {
				return err
			}
			rows = append(rows, cr.rows(cmp)...)
		}
	}
	var js, md bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rows); err != nil {
		return err
	}
	writeMarkdown(&md, rows, cmp != nil)
	for _, s := range []struct {
		path string
		data []byte
	}{{c.SaveJSON, js.Bytes()}, {c.SaveMD, md.Bytes()}} {
		if s.path == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
			return err
		}
		if err := renameio.WriteFile(s.path, s.data, 0o644, renameio.WithTempDir(filepath.Dir(s.path))); err != nil {
			return err
		}
	}
	if c.Output == "json" {
		_, err := os.Stdout.Write(js.Bytes())
		return err
	}
	_, err := os.Stdout.Write(md.Bytes())
	return err
}

// synthModel returns the path of the --synth model, writing it first if
// the cache does not hold it yet.
func (c *benchCmd) synthModel() (string, error) {
	spec, ok := synth.Presets[c.Synth]
	if !ok {
		return "", fmt.Errorf("unknown --synth preset %q (have: %s)", c.Synth, presetNames())
	}
	path := filepath.Join(c.CacheDir, "synth", fmt.Sprintf("%s-seed%d-%s.gguf", c.Synth, c.Seed, spec.WeightType))
	if f, err := gguf.Open(path); err == nil {
		f.Close()
		return path, nil
	}
	fmt.Fprintf(os.Stderr, "llm-bench: writing the synthetic %s model (seed %d) to %s\n", c.Synth, c.Seed, path)
	return path, writeSynth(c.Synth, c.Seed, path, !c.Quiet)
}

// resolveTypes resolves a plan quantizing with scheme q for the file and
// returns the per-tensor targets, as the engine's facade does.
func resolveTypes(f *gguf.File, q, backend, layout string) (map[string]kernels.Type, kernels.Layout, error) {
	p := &plan.Plan{Quantization: &plan.Quantization{Default: plan.Ptr(q)}}
	if backend != "" {
		p.Backend = plan.Ptr(backend)
	}
	if layout != "" {
		p.WeightLayout = plan.Ptr(layout)
	}
	r, err := plan.Resolve(p, plan.ModelDescFromGGUF(f), plan.Env{UsableCPUs: runtime.NumCPU(), HasAVX2: kernels.HasAVX2})
	if err != nil {
		return nil, 0, fmt.Errorf("-q %s: %w", q, err)
	}
	types := map[string]kernels.Type{}
	for _, d := range r.Tensors {
		types[d.Name] = d.Target
	}
	l := kernels.LayoutRows
	if *r.Plan.WeightLayout == plan.LayoutX8 {
		l = kernels.LayoutX8
	}
	return types, l, nil
}

// load opens the model and loads it quantized with q on the pool, in the
// plan's weight layout, or in forceLayout[0] when given.
func (c *benchCmd) load(q string, pool *kernels.Pool, onProgress func(done, total int64), forceLayout ...kernels.Layout) (*gguf.File, *model.Model, error) {
	be, err := kernels.BackendByName(c.Backend)
	if err != nil {
		return nil, nil, err
	}
	if c.Backend == kernels.AVX2BackendName && !kernels.HasAVX2 {
		return nil, nil, errors.New("--backend cpu-avx2: this CPU lacks AVX2/FMA/F16C")
	}
	f, err := gguf.Open(c.Model)
	if err != nil {
		return nil, nil, err
	}
	types, layout, err := resolveTypes(f, q, c.Backend, c.Layout)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if len(forceLayout) > 0 {
		layout = forceLayout[0]
	}
	m, err := model.LoadCached(f, c.Model, c.CacheDir, model.Options{Backend: be, Pool: pool, Types: types, Progress: onProgress, Layout: layout})
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, m, nil
}

// prepare converts the model for scheme q into the cache (if needed).
func (c *benchCmd) prepare(q string) error {
	pool, err := kernels.NewPool(runtime.NumCPU())
	if err != nil {
		return err
	}
	defer pool.Close()
	var pb *progress.Bar
	onProgress := func(done, total int64) {
		if c.Quiet || done == total && pb == nil {
			return // nothing to convert, or a cache hit
		}
		if pb == nil {
			pb = progress.New(os.Stderr, "quantizing to "+q, total)
		}
		pb.Set(done, total)
	}
	start := time.Now()
	f, m, err := c.load(q, pool, onProgress, kernels.LayoutRows) // fills the cache: no need to repack
	if err != nil {
		return err
	}
	defer f.Close()
	defer m.Close()
	if pb != nil {
		pb.Finish()
	}
	if qi := m.Quantization(); qi.Tensors > 0 && !qi.CacheHit {
		fmt.Fprintf(os.Stderr, "llm-bench: %s: converted %d tensors (%.2f GB → %.2f GB) in %.1f s into %s\n",
			q, qi.Tensors, float64(qi.SourceBytes)/1e9, float64(qi.Bytes)/1e9, time.Since(start).Seconds(), qi.CachePath)
		if qi.CacheError != "" {
			fmt.Fprintf(os.Stderr, "llm-bench: warning: quantization cache not used: %s\n", qi.CacheError)
		}
	}
	return nil
}

// spawn runs one configuration in a child process.
func (c *benchCmd) spawn(q string, threads int) (*configResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"bench", "--child", "-m", c.Model, "-q", q, "-t", strconv.Itoa(threads),
		"-p", joinInts(c.Prompt), "-n", joinInts(c.Gen), "-r", strconv.Itoa(c.Reps), "--cache-dir", c.CacheDir}
	if c.Backend != "" {
		args = append(args, "--backend", c.Backend)
	}
	if c.Layout != "" {
		args = append(args, "--layout", c.Layout)
	}
	if c.KV != "" {
		args = append(args, "--kv", c.KV)
	}
	if c.Depth > 0 {
		args = append(args, "-d", strconv.Itoa(c.Depth))
	}
	if c.CPUProfile != "" {
		args = append(args, "--cpuprofile", fmt.Sprintf("%s.%s.t%d.pprof", c.CPUProfile, q, threads))
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s at %d threads: %w", q, threads, err)
	}
	var cr configResult
	if err := json.Unmarshal(out, &cr); err != nil {
		return nil, fmt.Errorf("%s at %d threads: bad child output: %w", q, threads, err)
	}
	if !c.Quiet {
		for _, r := range cr.rows(nil) {
			fmt.Fprintf(os.Stderr, "llm-bench: %-7s t=%d %-6s %8.2f ± %.2f t/s  peak RSS %s\n", q, threads, r.Test, r.AvgTS, r.StddevTS, mib(r.PeakRSS))
		}
	}
	return &cr, nil
}

// childEnv marks a child process (the test binary uses it to run main).
const childEnv = "LLM_BENCH_CHILD"

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// runChild measures one configuration, llama-bench's way: a warm-up pp and
// tg, then for each repetition a fresh sequence; pp feeds BOS and random
// tokens in one batch, tg decodes one token at a time from BOS. Tokens/s is
// the test's token count over its wall time. With a depth, the sequence
// holds that many tokens (prefilled once, untimed) before each test.
func (c *benchCmd) runChild() error {
	if len(c.Quant) != 1 || len(c.Threads) != 1 {
		return errors.New("--child needs exactly one -q and one -t")
	}
	q, threads := c.Quant[0], c.Threads[0]
	pool, err := kernels.NewPool(threads)
	if err != nil {
		return err
	}
	defer pool.Close()
	start := time.Now()
	f, m, err := c.load(q, pool, nil)
	if err != nil {
		return err
	}
	defer f.Close()
	defer m.Close()
	loadMS := float64(time.Since(start).Microseconds()) / 1e3
	cfg := &m.Config
	maxP, maxN := 0, 0
	for _, p := range c.Prompt {
		maxP = max(maxP, p)
	}
	for _, n := range c.Gen {
		maxN = max(maxN, n)
	}
	ctx := c.Depth + max(maxP, maxN, 1)
	if ctx > cfg.Ctx {
		return fmt.Errorf("tests of %d tokens at depth %d exceed the model's context of %d", max(maxP, maxN, 1), c.Depth, cfg.Ctx)
	}
	kvType := kernels.F32
	if c.KV == "F16" {
		kvType = kernels.F16
	}
	if c.Depth < 0 {
		return errors.New("--depth must be ≥ 0")
	}
	s := m.NewStateKV(ctx, model.DefaultMaxBatch, kvType)
	logits := make([]float32, cfg.Vocab)
	rng := rand.New(rand.NewPCG(1, 2))
	toks := func(n int) []int32 {
		t := make([]int32, n)
		for i := range t {
			t[i] = int32(rng.IntN(cfg.Vocab))
		}
		t[0] = 1 // BOS
		return t
	}
	// The depth's tokens, run once; each test truncates back to them.
	var depthToks []int32
	if c.Depth > 0 {
		depthToks = toks(c.Depth)
		for o := 0; o < c.Depth; o += 512 {
			if err := m.Forward(s, depthToks[o:min(o+512, c.Depth)], logits, false); err != nil {
				return err
			}
		}
	}
	reset := func() {
		if err := s.Truncate(c.Depth); err != nil {
			panic(err)
		}
	}
	pp := func(n int) (time.Duration, error) {
		in := toks(n)
		if c.Depth > 0 {
			in[0] = int32(rng.IntN(cfg.Vocab)) // no BOS mid-sequence
		}
		reset()
		t0 := time.Now()
		err := m.Forward(s, in, logits, false)
		return time.Since(t0), err
	}
	tg := func(n int) (time.Duration, error) {
		in := toks(n)
		if c.Depth > 0 {
			in[0] = int32(rng.IntN(cfg.Vocab))
		}
		reset()
		t0 := time.Now()
		for i := 0; i < n; i++ {
			if err := m.Forward(s, in[i:i+1], logits, false); err != nil {
				return 0, err
			}
		}
		return time.Since(t0), nil
	}
	// Warm-up (also faults the weights in).
	if maxP > 0 {
		if _, err := pp(maxP); err != nil {
			return err
		}
	}
	if _, err := tg(1); err != nil {
		return err
	}
	cr := configResult{Model: modelName(f, c.Model), File: c.Model, Quant: q, Backend: m.Backend().Name(), Layout: m.Layout().Layout.String(), KVType: kvType.String(), Threads: threads,
		LoadMS: loadMS, CachePath: m.Quantization().CachePath}
	qi := m.Quantization()
	for i := range f.Tensors {
		cr.Params += f.Tensors[i].NumElements()
		cr.WeightBytes += f.Tensors[i].Size
	}
	cr.WeightBytes += qi.Bytes - qi.SourceBytes
	kv := int64(cfg.Layers) * int64(cfg.KVDim()) * int64(kvType.TypeSize())
	cr.KVBytes = kv*int64(ctx) + kv*int64((ctx+31)&^31) // V, and K transposed with padded rows
	run := func(name string, n, np, ng int, f func(int) (time.Duration, error)) error {
		if c.Depth > 0 {
			name += fmt.Sprintf("@d%d", c.Depth)
		}
		tr := testRun{Test: name, NPrompt: np, NGen: ng}
		for r := 0; r < c.Reps; r++ {
			d, err := f(n)
			if err != nil {
				return err
			}
			tr.Samples = append(tr.Samples, float64(n)/d.Seconds())
		}
		cr.Tests = append(cr.Tests, tr)
		return nil
	}
	if c.CPUProfile != "" {
		pf, err := os.Create(c.CPUProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for _, p := range c.Prompt {
		if p > 0 {
			if err := run(fmt.Sprintf("pp%d", p), p, p, 0, pp); err != nil {
				return err
			}
		}
	}
	for _, n := range c.Gen {
		if n > 0 {
			if err := run(fmt.Sprintf("tg%d", n), n, 0, n, tg); err != nil {
				return err
			}
		}
	}
	if cr.PeakRSS, err = vmHWM(); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(cr)
}

func modelName(f *gguf.File, path string) string {
	if n, ok := f.String("general.name"); ok && n != "" {
		return n
	}
	return strings.TrimSuffix(filepath.Base(path), ".gguf")
}

// vmHWM returns the process's peak resident set size (VmHWM).
func vmHWM() (int64, error) {
	fh, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

func (cr *configResult) rows(cmp map[string]map[string]map[string]float64) []result {
	var out []result
	for _, t := range cr.Tests {
		avg, sd := meanSD(t.Samples)
		r := result{Model: cr.Model, File: cr.File, Quant: cr.Quant, Backend: cr.Backend, Layout: cr.Layout, KVType: cr.KVType, Threads: cr.Threads,
			Params: cr.Params, WeightBytes: cr.WeightBytes, KVBytes: cr.KVBytes, Test: t.Test, NPrompt: t.NPrompt,
			NGen: t.NGen, Samples: t.Samples, AvgTS: avg, StddevTS: sd, PeakRSS: cr.PeakRSS, LoadMS: cr.LoadMS}
		r.RSSRatio = float64(cr.PeakRSS) / float64(cr.WeightBytes+cr.KVBytes)
		if v := cmp[cr.Quant][fmt.Sprintf("t%d", cr.Threads)][t.Test]; v > 0 {
			r.LlamaCppTS, r.Ratio = v, avg/v
		}
		out = append(out, r)
	}
	return out
}

func meanSD(x []float64) (float64, float64) {
	var s float64
	for _, v := range x {
		s += v
	}
	m := s / float64(len(x))
	if len(x) < 2 {
		return m, 0
	}
	var ss float64
	for _, v := range x {
		ss += (v - m) * (v - m)
	}
	return m, math.Sqrt(ss / float64(len(x)-1))
}

// readCompare reads llama.cpp figures: {"Q8_0": {"t1": {"pp64": 42.3, …}}}.
// Other top-level keys are ignored.
func readCompare(path string) (map[string]map[string]map[string]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("--compare %s: %w", path, err)
	}
	out := map[string]map[string]map[string]float64{}
	for k, v := range raw {
		var byThreads map[string]json.RawMessage
		if json.Unmarshal(v, &byThreads) != nil {
			continue
		}
		for tk, tv := range byThreads {
			var tests map[string]float64
			if !strings.HasPrefix(tk, "t") || json.Unmarshal(tv, &tests) != nil {
				continue
			}
			if out[k] == nil {
				out[k] = map[string]map[string]float64{}
			}
			out[k][tk] = tests
		}
	}
	return out, nil
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func writeMarkdown(w io.Writer, rows []result, withRef bool) {
	fmt.Fprint(w, "| model | quant | size | params | backend | threads | test | t/s |")
	if withRef {
		fmt.Fprint(w, " llama.cpp t/s | ratio |")
	}
	fmt.Fprintln(w, " peak RSS | RSS / (weights+KV) |")
	fmt.Fprint(w, "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |")
	if withRef {
		fmt.Fprint(w, " ---: | ---: |")
	}
	fmt.Fprintln(w, " ---: | ---: |")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %.2f GiB | %.2f B | %s | %d | %s | %.2f ± %.2f |",
			r.Model, r.Quant, float64(r.WeightBytes)/(1<<30), float64(r.Params)/1e9, backendDesc(r), r.Threads, r.Test, r.AvgTS, r.StddevTS)
		if withRef {
			if r.LlamaCppTS > 0 {
				fmt.Fprintf(w, " %.2f | %.2f× |", r.LlamaCppTS, r.Ratio)
			} else {
				fmt.Fprint(w, " – | – |")
			}
		}
		fmt.Fprintf(w, " %s | %.3f |\n", mib(r.PeakRSS), r.RSSRatio)
	}
}

// backendDesc is the backend column: backend, weight layout, and the KV
// cache type when it is not F32.
func backendDesc(r result) string {
	d := r.Backend + " " + r.Layout
	if r.KVType != "" && r.KVType != "F32" {
		d += " kv" + r.KVType
	}
	return d
}
