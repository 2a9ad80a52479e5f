package kernels

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// generatedFiles are written by the avo generator in _asm/.
var generatedFiles = []string{"dot_amd64.s", "dot_amd64.go"}

// TestGeneratedAssemblyIsCurrent regenerates the assembly into a temporary
// directory and compares it byte for byte with the committed files. It needs
// the go command and avo (from the module cache or the module proxy); it is
// skipped under -short, when go is missing, or when modules cannot be
// downloaded. _asm/check-generated.sh does the same from a Makefile.
func TestGeneratedAssemblyIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not running the assembly generator")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("go command not found: cannot run the assembly generator")
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(goBin, "run", ".", "-dir", dir)
	cmd.Dir = "_asm"
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := string(out)
		for _, netErr := range []string{"dial tcp", "no such host", "connection refused", "proxy.golang.org", "i/o timeout", "GOPROXY=off"} {
			if strings.Contains(msg, netErr) {
				t.Skipf("assembly generator unavailable (no module download): %v\n%s", err, msg)
			}
		}
		t.Fatalf("assembly generator failed: %v\n%s", err, msg)
	}
	for _, f := range generatedFiles {
		want, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(have, want) {
			t.Errorf("kernels/%s is stale: run `go generate ./kernels/` (or `cd kernels/_asm && go run . -dir ..`)", f)
		}
	}
}
