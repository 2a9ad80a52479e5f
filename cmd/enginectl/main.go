// Command enginectl controls llm-engined over its JSON-RPC socket; see
// package rpc/ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/weos/llm-engine/rpc/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
