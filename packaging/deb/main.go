// Command deb builds the llm-engine .deb from packaging/nfpm.yaml with nfpm
// (github.com/goreleaser/nfpm/v2). It is its own module, so that nfpm's
// dependencies stay out of the engine's go.mod. From the repository root:
//
//	go run -C packaging/deb . -root ../.. -bindir bin -version 0.1.0 -out dist
//
// ${VERSION}, ${ARCH} and ${BINDIR} in nfpm.yaml come from the flags. A
// missing optional binary (llm-bench) is left out with a warning; any other
// missing file is an error.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// optional binaries may be missing from -bindir (built by other teams).
var optional = map[string]bool{"llm-bench": true}

func main() {
	root := flag.String("root", ".", "repository root (sources in nfpm.yaml are relative to it)")
	config := flag.String("config", "packaging/nfpm.yaml", "nfpm configuration, relative to -root")
	bindir := flag.String("bindir", "bin", "directory holding llm-engined, enginectl and llm-bench, relative to -root")
	version := flag.String("version", "0.0.0~dev", "package version")
	arch := flag.String("arch", runtime.GOARCH, "Debian architecture")
	out := flag.String("out", "dist", "output directory (or a file name ending in .deb), relative to -root")
	flag.Parse()
	if err := build(*root, *config, *bindir, *version, *arch, *out); err != nil {
		fmt.Fprintf(os.Stderr, "deb: %v\n", err)
		os.Exit(1)
	}
}

// debianVersion turns a git-describe version into a Debian one: "v1.2.3"
// is "1.2.3"; one that does not start with a digit (a bare commit,
// "d6bda70-dirty") becomes "0.0.0~d6bda70-dirty".
func debianVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	v = strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || strings.ContainsRune(".+-~", r) {
			return r
		}
		return '.'
	}, v)
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0.0.0~" + v
	}
	return strings.TrimRight(v, "~.-")
}

func build(root, config, bindir, version, arch, out string) error {
	if err := os.Chdir(root); err != nil {
		return err
	}
	version = debianVersion(version)
	env := map[string]string{"VERSION": version, "ARCH": arch, "BINDIR": bindir}
	cfg, err := nfpm.ParseFileWithEnvMapping(config, func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return os.Getenv(k)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", config, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return err
	}
	var kept files.Contents
	for _, c := range info.Contents {
		if _, err := os.Stat(c.Source); err != nil {
			if optional[filepath.Base(c.Source)] {
				fmt.Fprintf(os.Stderr, "deb: warning: %s is missing: the package will not contain %s\n", c.Source, c.Destination)
				continue
			}
			return fmt.Errorf("%s: %w", c.Destination, err)
		}
		kept = append(kept, c)
	}
	info.Contents = kept
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return err
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	target := out
	if !strings.HasSuffix(out, ".deb") {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		target = filepath.Join(out, pkg.ConventionalFileName(info))
	}
	f, err := os.Create(target)
	if err != nil {
		return err
	}
	info.Target = target
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(target)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println(target)
	return nil
}
