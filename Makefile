# llm-engine: the two commands a newcomer needs are `make demo` and `make test`.
GO      ?= go
BIN     := bin
PKGS    := ./...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/weos/llm-engine/engine.Version=$(VERSION)

.PHONY: all build test test-short lint demo bench fmt generate check-generated clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# The test suite: static checks, then every package under the race detector.
# Tests that need ../shared skip loudly when it is absent. -p 1: several
# tests measure CPU shares under a real cgroup quota; test binaries running
# side by side on 2 cores would make them noisy.
test: lint check-generated
	$(GO) test -race -count=1 -p 1 -timeout 40m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Regenerates generated sources (avo assembly, the plan schema).
generate:
	$(GO) generate ./...

# Fails when a generated file is stale (the tests also check this).
check-generated:
	@sh kernels/_asm/check-generated.sh

demo: build
	@./contrib/demo.sh

# Speed on the TinyLlama-1.1B shape (not part of make test): writes
# bench/results.json and bench/results.md.
bench: build
	@./contrib/bench.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
