// Command agent is an example WeOS agent for llm-engined. Over the JSON-RPC
// API only (rpc/client), it watches the engine (events.subscribe), explores
// threads × quantization × batch around a plan with bench.run, keeps the
// candidates whose p95 inter-token latency meets a bound, and proposes the
// one with the best tokens per joule (plan.propose, with the benchmark as
// evidence). It needs no special rights: an admin promotes the proposal
// (enginectl plan promote NAME VERSION). See README.md.
//
//	agent --model stories260K --objective energy --max-p95-ms 50
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc/client"
	"github.com/weos/llm-engine/rpc/tune"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// Report is what the agent prints on stdout (JSON).
type Report struct {
	Outcome *tune.Outcome `json:"outcome"`
	// Events seen on the subscription while the agent worked, by
	// notification name.
	Events map[string]int `json:"events"`
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func strList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "daemon socket (default $LLM_ENGINE_SOCKET, else /run/llm-engine/engine.sock)")
	model := fs.String("model", "", "model id (a path needs admin rights: it would be loaded)")
	name := fs.String("name", "default", "plan to tune: its active version is the base; the winner is proposed as its next version")
	objective := fs.String("objective", tune.ObjectiveEnergy, "energy (tokens per joule) or throughput (tokens per second)")
	maxP95 := fs.Float64("max-p95-ms", 0, "bound on the p95 inter-token latency in ms (0: none)")
	threads := fs.String("threads", "1,2", "thread counts to try")
	quants := fs.String("quant", "", "quantization schemes to try, e.g. source,Q8_0 (default: the base's)")
	batches := fs.String("batch", "1,8", "batch sizes to try (1: simple mode)")
	kvs := fs.String("kv", "", "KV cache types to try, e.g. F32,F16 (default: the base's)")
	maxTokens := fs.Int("max-tokens", 24, "tokens per benchmark run")
	reps := fs.Int("repetitions", 2, "repetitions per benchmark")
	maxSeconds := fs.Float64("max-seconds", 60, "time budget of each benchmark")
	maxJoules := fs.Float64("max-joules", 0, "energy budget of each benchmark (needs an energy meter)")
	dryRun := fs.Bool("dry-run", false, "do not propose the winner")
	quiet := fs.Bool("quiet", false, "do not log progress and events on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *model == "" {
		fmt.Fprintln(stderr, "agent: --model is required")
		return 2
	}
	th, err := intList(*threads)
	if err == nil {
		var bs []int
		if bs, err = intList(*batches); err == nil {
			return session(ctx, stdout, stderr, getenv, *socket, tune.Options{
				Model: *model, Name: *name, Objective: *objective, MaxP95MS: *maxP95,
				Threads: th, Quantizations: strList(*quants), Batches: bs, KVTypes: strList(*kvs), Propose: !*dryRun,
				Workload: engine.BenchWorkload{MaxTokens: *maxTokens, Repetitions: *reps},
				Budget:   engine.BenchBudget{MaxSeconds: *maxSeconds, MaxJoules: *maxJoules},
			}, *quiet)
		}
	}
	fmt.Fprintf(stderr, "agent: %v\n", err)
	return 2
}

func session(ctx context.Context, stdout, stderr io.Writer, getenv func(string) string, socket string, o tune.Options, quiet bool) int {
	if socket == "" {
		socket = getenv("LLM_ENGINE_SOCKET")
	}
	if socket == "" {
		socket = "/run/llm-engine/engine.sock"
	}
	var logMu sync.Mutex
	logf := func(f string, a ...any) {
		if quiet {
			return
		}
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(stderr, "agent: "+f+"\n", a...)
	}
	o.Logf = logf

	// Observe: a connection of its own for the event stream.
	events := map[string]int{}
	var evMu sync.Mutex
	sub, err := client.Dial(socket)
	if err != nil {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return 1
	}
	subCtx, stopSub := context.WithCancel(ctx)
	subDone := make(chan struct{})
	subscribed := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(subDone)
		res, err := sub.Subscribe(subCtx, []string{engine.TopicRun, engine.TopicPlan, engine.TopicModel}, func(method string, params json.RawMessage) {
			once.Do(func() { close(subscribed) })
			evMu.Lock()
			events[method]++
			evMu.Unlock()
			if method != engine.EventRunStarted && method != engine.EventRunFinished {
				logf("event %s %s", method, params)
			}
		})
		if err == nil {
			logf("subscription ended: %s", res.Reason)
		}
	}()

	c, err := client.Dial(socket)
	if err != nil {
		stopSub()
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return 1
	}
	defer c.Close()
	// Make sure the subscription is live before acting: wait for its
	// first event, which our own activity produces, for a moment.
	out, err := tune.Run(ctx, c, o)
	select {
	case <-subscribed:
	case <-time.After(2 * time.Second):
	}
	time.Sleep(100 * time.Millisecond) // let the last events arrive
	stopSub()
	sub.Close()
	<-subDone
	if err != nil {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		if out == nil {
			return 1
		}
	}
	evMu.Lock()
	rep := Report{Outcome: out, Events: events}
	b, _ := json.MarshalIndent(rep, "", "  ")
	evMu.Unlock()
	fmt.Fprintf(stdout, "%s\n", b)
	if err != nil {
		return 1
	}
	return 0
}
