// Command llm-bench measures the engine llama-bench's way and writes seeded
// synthetic models of real shapes (never committed: generated on demand).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/google/renameio/v2"
	"github.com/schollz/progressbar/v3"

	"github.com/weos/llm-engine/engine/synth"
)

type synthCmd struct {
	Preset string `help:"Model shape: ${presets}." default:"tiny"`
	Out    string `help:"Output GGUF path." required:"" type:"path"`
	Seed   uint64 `help:"PRNG seed of the weights." default:"1"`
	Quiet  bool   `help:"No progress bar."`
}

func (c *synthCmd) Run() error {
	spec, ok := synth.Presets[c.Preset]
	if !ok {
		return fmt.Errorf("unknown preset %q (have: %s)", c.Preset, presetNames())
	}
	spec.Seed = c.Seed
	if !c.Quiet {
		bar := progressbar.DefaultBytes(-1, "writing "+filepath.Base(c.Out))
		spec.Progress = func(done, total int64) {
			bar.ChangeMax64(total)
			bar.Set64(done)
		}
		defer bar.Finish()
	}
	// Atomic: a crash or ^C never leaves a half-written model behind.
	pf, err := renameio.NewPendingFile(c.Out, renameio.WithPermissions(0o644))
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
		kong.Description("Benchmarks llm-engine and writes synthetic models."),
		kong.Vars{"presets": presetNames()})
	if err := ctx.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "llm-bench:", err)
		os.Exit(1)
	}
}
