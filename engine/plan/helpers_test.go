package plan_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/plan"
)

// sharedDir finds the shared reference folder: $LLM_ENGINE_SHARED, or
// ../shared next to the repository root.
func sharedDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("LLM_ENGINE_SHARED"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(d), "shared")
		}
		if filepath.Dir(d) == d {
			t.Fatal("repository root not found")
		}
	}
}

func loadModel(t *testing.T, name string) plan.ModelDesc {
	t.Helper()
	path := filepath.Join(sharedDir(t), "models", name)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("reference model missing: %v", err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return plan.ModelDescFromGGUF(f)
}

var testEnv = plan.Env{UsableCPUs: 2, HasAVX2: true, CanCapPower: true}

func asFieldErrors(err error, fe *plan.FieldErrors) bool {
	return errors.As(err, fe)
}
