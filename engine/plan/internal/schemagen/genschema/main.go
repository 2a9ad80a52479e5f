// Command genschema writes engine/plan's plan.schema.json. It is run by
// `go generate` in engine/plan.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/renameio/v2"

	"github.com/weos/llm-engine/engine/plan/internal/schemagen"
)

func main() {
	out := flag.String("o", "plan.schema.json", "output file")
	dir := flag.String("dir", ".", "engine/plan source directory")
	flag.Parse()
	b, err := schemagen.Generate(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := renameio.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
