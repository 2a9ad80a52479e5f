// Package e2e_test exercises plans, the scheduler, run records, events and
// benchmarks end to end: the real engine behind the real daemon on a real
// Unix socket (daemon/daemontest), driven through rpc/client.
package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
)

// sharedModel returns the path of a shared model, or skips loudly.
func sharedModel(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("LLM_ENGINE_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared")
	}
	p, err := filepath.Abs(filepath.Join(dir, "models", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("SKIPPING %s: shared model %s not found (set LLM_ENGINE_SHARED, or put the shared data at ../shared from the repository root)", t.Name(), p)
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return p
}

type rig struct {
	eng *engine.Engine
	srv *daemontest.Server
	dir string
}

// start runs the real engine (2 threads, state in a temporary directory)
// behind an in-process daemon.
func start(t testing.TB, cfg daemon.Config, opts engine.Options) *rig {
	t.Helper()
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	if opts.CacheDir == "" {
		opts.CacheDir = t.TempDir()
	}
	if opts.Threads == 0 {
		opts.Threads = 2
	}
	eng, err := engine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s := daemontest.Start(t, cfg, eng)
	t.Cleanup(func() { eng.Close() }) // after the server stops (cleanups run last-in first-out)
	return &rig{eng: eng, srv: s, dir: opts.StateDir}
}

func dial(t testing.TB, path string) *client.Client {
	t.Helper()
	c, err := client.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func rpcErr(err error) *rpc.Error {
	var re *rpc.Error
	if errors.As(err, &re) {
		return re
	}
	return nil
}

func raw(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// load loads a shared model through the daemon and returns its id.
func load(t testing.TB, c *client.Client, file string, plan any) string {
	t.Helper()
	mi, err := c.LoadModel(ctxT(t, time.Minute), engine.LoadRequest{Path: sharedModel(t, file), Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	return mi.ModelID
}
