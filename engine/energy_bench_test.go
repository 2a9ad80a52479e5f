package engine

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkTokensPerJoule reports tokens per joule per run (and J/token,
// average watts, decode tokens/s) for stories260K and synth-256-F32 at 1 and
// 2 worker threads, with the energy source in the name ("estimate" on a host
// without readable RAPL: a model of the worker threads' CPU time, not a
// measurement). Each iteration is one greedy run of the prompt plus
// MaxTokens generated tokens; the figures are over all iterations.
//
//	go test -run '^$' -bench TokensPerJoule -benchtime 20x ./engine/
func BenchmarkTokensPerJoule(b *testing.B) {
	for _, c := range []struct {
		file      string
		maxTokens int
	}{
		{"stories260K.gguf", 256},
		{"synth-256-F32.gguf", 200},
	} {
		path := sharedModel(b, c.file)
		for _, threads := range []int{1, 2} {
			e := newTestEngine(b, threads, PowerOptions{})
			m, err := e.load(path)
			if err != nil {
				b.Fatal(err)
			}
			src := e.energy.meter.Source()
			name := fmt.Sprintf("%s/threads=%d/source=%s", m.info.ModelID, threads, src)
			b.Run(name, func(b *testing.B) {
				generate(b, e, m.info.ModelID, 8) // warm up
				var tokens, joules, cpu, wall, decodeMS float64
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					res, err := e.Generate(context.Background(), GenerateRequest{Model: m.info.ModelID, Prompt: "Once upon a time", MaxTokens: c.maxTokens}, nil)
					if err != nil {
						b.Fatal(err)
					}
					mt := res.Metrics
					if mt.EnergySource != src {
						b.Fatalf("source %q, meter %q", mt.EnergySource, src)
					}
					tokens += float64(mt.GeneratedTokens)
					joules += mt.Joules
					cpu += mt.CPUSeconds
					if mt.AvgWatts > 0 {
						wall += mt.Joules / mt.AvgWatts
					}
					decodeMS += mt.DecodeMS
				}
				b.StopTimer()
				b.ReportMetric(tokens/joules, "tokens/J")
				b.ReportMetric(joules/tokens*1000, "mJ/token")
				b.ReportMetric(joules/wall, "W")
				b.ReportMetric(tokens/(decodeMS/1000), "tokens/s")
				b.ReportMetric(cpu/wall, "cores")
			})
		}
	}
}
