// Command _asm generates the AVX2 kernels of package kernels with avo.
//
// It lives in its own module so that avo stays out of the engine's build.
// Run it from this directory (or through `go generate ./kernels/`):
//
//	go run . -dir ..
//
// which writes ../dot_amd64.s and ../dot_amd64.go. The output does not depend
// on -dir (the file header always names the canonical command), so the
// staleness check (kernels.TestGeneratedAssemblyIsCurrent and
// check-generated.sh) can generate into a temporary directory and compare
// bytes.
//
// Every kernel here has a pure-Go twin in package kernels that is its
// specification; the comments name the twin, and the twin's doc comment spells
// out the accumulation order reproduced here. Rules: a float32 multiply-add
// is fused (VFMADD…) exactly where the twin calls kernels.fma32, separate
// (VMULPS then VADDPS) everywhere else; integer sums are exact int32
// arithmetic.
package main

import (
	"flag"
	"fmt"
	"os"

	. "github.com/mmcloughlin/avo/build"
)

func main() {
	dir := flag.String("dir", "..", "directory that receives dot_amd64.s and dot_amd64.go")
	flag.Parse()

	genConstants()
	genX8Constants()
	genX8()
	genQ5_0()
	genFloat()
	genQuant()
	genFMATest()
	genExpConstants()
	genSwiGLU()
	genExpSub()
	genAttn()
	genPause()

	if err := os.Chdir(*dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Canonical arguments: avo prints them in the header of both files.
	args := []string{"-out", "dot_amd64.s", "-stubs", "dot_amd64.go", "-pkg", "kernels"}
	os.Args = append(os.Args[:1], args...)
	if err := flag.CommandLine.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	Generate()
}
