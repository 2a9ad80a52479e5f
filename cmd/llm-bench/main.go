// Command llm-bench measures the engine llama-bench's way and writes seeded
// synthetic models of real shapes (never committed: generated on demand).
//
//	llm-bench -m FILE [-q TYPE[,TYPE]] [-p 64] [-n 32] [-t 1,2] [-r 3] [-o md|json] [--backend cpu-avx2]
//	llm-bench --synth tinyllama-1.1b -q Q8_0,Q6_K,Q4_K_M -t 1,2
//	llm-bench synth --preset tiny --out tiny.gguf
//
// Every (quantization, threads) configuration runs in a fresh child process
// (llm-bench re-executes itself), so that the peak RSS it reports (VmHWM)
// belongs to that configuration alone. Quantization goes through the
// engine's load-time path: the parent converts once into the cache
// directory, the children map the cached result.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/google/renameio/v2"

	"github.com/weos/llm-engine/engine/synth"
	"github.com/weos/llm-engine/internal/progress"
)

type synthCmd struct {
	Preset string `help:"Model shape: ${presets}." default:"tiny"`
	Out    string `help:"Output GGUF path." required:"" type:"path"`
	Seed   uint64 `help:"PRNG seed of the weights." default:"1"`
	Quiet  bool   `help:"No progress bar."`
}

func (c *synthCmd) Run() error {
	return writeSynth(c.Preset, c.Seed, c.Out, !c.Quiet)
}

// writeSynth writes the preset's model to out atomically: a crash or ^C
// never leaves a half-written model behind.
func writeSynth(preset string, seed uint64, out string, bar bool) error {
	spec, ok := synth.Presets[preset]
	if !ok {
		return fmt.Errorf("unknown preset %q (have: %s)", preset, presetNames())
	}
	spec.Seed = seed
	if bar {
		pb := progress.New(os.Stderr, "writing "+filepath.Base(out), -1)
		spec.Progress = func(done, total int64) { pb.Set(done, total) }
		defer pb.Finish()
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	pf, err := renameio.NewPendingFile(out, renameio.WithPermissions(0o644), renameio.WithTempDir(filepath.Dir(out)))
	if err != nil {
		return err
	}
	defer pf.Cleanup()
	if err := synth.Llama(pf, spec); err != nil {
		return err
	}
	return pf.CloseAtomicallyReplace()
}

type cli struct {
	Bench benchCmd `cmd:"" default:"withargs" help:"Measure prompt processing (pp) and generation (tg) speed, llama-bench style (the default command)."`
	Synth synthCmd `cmd:"" help:"Write a synthetic Llama model with seeded random weights."`
}

func presetNames() string {
	var n []string
	for k := range synth.Presets {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
}

func main() {
	var c cli
	ctx := kong.Parse(&c, kong.Name("llm-bench"),
		kong.Description("Benchmarks llm-engine (llama-bench's flags and output) and writes synthetic models."),
		kong.Vars{"presets": presetNames()})
	if err := ctx.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "llm-bench:", err)
		os.Exit(1)
	}
}
