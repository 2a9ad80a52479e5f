package plan_test

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/kernels"
)

var (
	logQuantizing = regexp.MustCompile(`quantizing '([^']+)' to '[^']+' as (\S+)`)
	logOverride   = regexp.MustCompile(`^llama_tensor_get_type: (\S+)\s+- applying manual override: \S+ -> (\S+)`)
	logFallback   = regexp.MustCompile(`^warning: (\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\).*-> falling back to\s+(\S+)`)
	logTensor     = regexp.MustCompile(`^\[\s*\d+/\s*\d+\] (\S+)\s+- \[.*\], type =\s+(\S+), (converting to (\S+) \.\.|size)`)
)

func ggmlType(t *testing.T, name string) kernels.Type {
	t.Helper()
	ty, ok := kernels.ParseType(name)
	if !ok {
		t.Fatalf("unknown ggml type %q", name)
	}
	return ty
}

// TestQuantizeLogs replays llama-quantize's logs: for every tensor the type
// it chose, and for every fallback the type it first asked for (the mix
// rule's choice) and the row length that forced the fallback.
func TestQuantizeLogs(t *testing.T) {
	logs, _ := filepath.Glob(filepath.Join(sharedDir(t), "reference", "quantize-logs", "*.log"))
	if len(logs) == 0 {
		t.Skip("no quantize logs")
	}
	for _, path := range logs {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var src, scheme string
			overrides := map[string]string{}
			type fb struct{ ncols, block, asked, got string }
			fallbacks := map[string]fb{}
			targets := map[string]kernels.Type{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := sc.Text()
				if m := logQuantizing.FindStringSubmatch(line); m != nil {
					src, scheme = m[1], m[2]
				} else if m := logOverride.FindStringSubmatch(line); m != nil {
					overrides[m[1]] = ggmlType(t, m[2]).String()
				} else if m := logFallback.FindStringSubmatch(line); m != nil {
					fallbacks[m[1]] = fb{m[2], m[3], ggmlType(t, m[4]).String(), ggmlType(t, m[5]).String()}
				} else if m := logTensor.FindStringSubmatch(line); m != nil {
					ty := m[2]
					if m[4] != "" {
						ty = m[4]
					}
					targets[m[1]] = ggmlType(t, ty)
				}
			}
			if src == "" || len(targets) == 0 {
				t.Fatal("log not understood")
			}
			r, err := plan.Resolve(quantPlan(scheme, overrides), loadModel(t, src), testEnv)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Tensors) != len(targets) {
				t.Fatalf("%d decisions, log has %d tensors", len(r.Tensors), len(targets))
			}
			for _, d := range r.Tensors {
				if want, ok := targets[d.Name]; !ok || d.Target != want {
					t.Errorf("%s: %s (%s), llama.cpp: %s", d.Name, d.Target, d.Reason, want)
				}
				w, isFB := fallbacks[d.Name]
				if isFB != d.Fallback {
					t.Errorf("%s: fallback %v, llama.cpp %v (%s)", d.Name, d.Fallback, isFB, d.Reason)
					continue
				}
				if isFB {
					frag := "row length " + w.ncols + " not a multiple of " + w.block + " (" + w.asked + "→"
					if !strings.Contains(d.Reason, frag) {
						t.Errorf("%s: reason %q lacks %q", d.Name, d.Reason, frag)
					}
				}
			}
		})
	}
}
