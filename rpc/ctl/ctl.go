// Package ctl is enginectl: a command-line client of llm-engined. The main
// in cmd/enginectl only calls Main.
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/internal/progress"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
)

// DefaultSocket is where the packaged daemon listens.
const DefaultSocket = "/run/llm-engine/engine.sock"

// SocketEnv overrides DefaultSocket.
const SocketEnv = "LLM_ENGINE_SOCKET"

// Exit codes.
const (
	ExitOK          = 0
	ExitError       = 1   // the call failed (connection, RPC error)
	ExitUsage       = 2   // bad command line
	ExitInterrupted = 130 // SIGINT
)

type cli struct {
	Socket string `help:"Daemon socket (default: $LLM_ENGINE_SOCKET, else /run/llm-engine/engine.sock)." placeholder:"PATH"`
	JSON   bool   `name:"json" help:"Print the result as JSON."`

	Info       infoCmd       `cmd:"" help:"Show the engine's version, backends and CPU features."`
	Models     modelsCmd     `cmd:"" help:"List the loaded models."`
	Load       loadCmd       `cmd:"" help:"Load a GGUF model."`
	Unload     unloadCmd     `cmd:"" help:"Unload a model."`
	Generate   generateCmd   `cmd:"" help:"Generate text; streams it to stdout, metrics to stderr."`
	Discover   discoverCmd   `cmd:"" help:"Print the API's OpenRPC document."`
	API        apiCmd        `cmd:"" name:"api" help:"Print the API's OpenRPC document (alias of discover)."`
	Tokenize   tokenizeCmd   `cmd:"" help:"Print the token ids of a text (tokenize)."`
	Detokenize detokenizeCmd `cmd:"" help:"Print the text of token ids (detokenize)."`
	Chat       chatCmd       `cmd:"" help:"Chat with a model through its chat template; streams the reply."`
	Power      powerCmd      `cmd:"" help:"Show the energy meter and the power cap; --set-cap sets it."`
	Metrics    metricsCmd    `cmd:"" help:"Show the engine's counters (--prometheus: text exposition)."`
	Sched      schedCmd      `cmd:"" help:"Show the schedulers: queues, batches, KV caches (sched.stats)."`
	Plan       planCmd       `cmd:"" help:"Validate, show, store, compare, propose, promote and roll back execution plans."`
	Runs       runsCmd       `cmd:"" help:"List runs (in progress and recorded)."`
	Run        runCmd        `cmd:"" help:"Show a run's record: request, resolved plan, tokens, metrics."`
	Cancel     cancelCmd     `cmd:"" help:"Cancel a queued or running run."`
	Bench      benchCmd      `cmd:"" help:"Benchmark plans against each other (bench.run)."`
	Tune       tuneCmd       `cmd:"" help:"Search threads × quantization × batch × KV cache type for a better plan and propose it."`
	Events     eventsCmd     `cmd:"" help:"Stream the engine's events as JSON lines."`
	Help       helpCmd       `cmd:"" help:"Show help for enginectl or one of its commands."`
}

// description is the top-level help: enough to stand in for a man page.
const description = `Control llm-engined, the llm-engine daemon, over its JSON-RPC 2.0 socket.

SOCKET AND PERMISSIONS
  enginectl connects to --socket, else $LLM_ENGINE_SOCKET, else
  /run/llm-engine/engine.sock (created by llm-engine.socket, which starts the
  daemon on the first connection). Members of group llm-engine may connect:
  info, models, generate, chat, tokenize and detokenize (with a loaded model),
  power, metrics, discover and api are open to them. load, unload,
  power --set-cap, and generate, chat, tokenize or detokenize with a model path
  that is not loaded, also need
  root, the daemon's user, or membership of the admin group named by
  "admin_group" in /etc/llm-engine/engine.json (default llm-engine-admin);
  others get "unauthorized" (code -32030).

ENVIRONMENT
  LLM_ENGINE_SOCKET   socket path when --socket is not given.

EXIT STATUS
  0 success; 1 the call failed (cannot connect, or the daemon answered with an
  error: the message ends with its JSON-RPC code); 2 bad command line;
  130 interrupted (Ctrl-C cancels a generation in the daemon too).

FILES
  /run/llm-engine/engine.sock     the daemon's socket
  /etc/llm-engine/engine.json     the daemon's configuration (llm-engined --help)

EXAMPLES
  enginectl info
  sudo enginectl load /srv/models/tinyllama.Q4_K.gguf
  enginectl generate -m tinyllama.Q4_K -p "Once upon a time" -n 64 --temperature 0.8 --seed 7
  enginectl --json generate -m tinyllama.Q4_K -p "2+2=" -n 4 | jq .text
  enginectl power; sudo enginectl power --set-cap 15
  enginectl metrics --prometheus > llm_engine.prom
  enginectl plan validate fast.json && sudo enginectl plan apply default fast.json
  enginectl bench -m tinyllama.Q4_K --plan default@1 --plan default@2
  enginectl tune -m tinyllama.Q4_K --objective energy --max-p95-ms 50
  enginectl runs; enginectl run RUN_ID; enginectl cancel RUN_ID
  enginectl tokenize -m tinyllama.Q4_K --special "Hello world"; enginectl detokenize -m tinyllama.Q4_K 1 15043
  enginectl chat -m qwen2.5-0.5b --system "Be brief." "What is a GGUF file?"
  enginectl api > openrpc.json
  enginectl help generate`

type infoCmd struct{}
type modelsCmd struct{}
type discoverCmd struct{}

// helpCmd prints the help of a command: "enginectl help generate" is
// "enginectl generate --help".
type helpCmd struct {
	Command []string `arg:"" optional:"" help:"Command to describe."`
}

func (infoCmd) Help() string {
	return "Prints the daemon's version, Go version, the kernel backends this host can run, its CPU features and CPU count. Open to any user who can connect."
}

func (modelsCmd) Help() string {
	return "One line per loaded model: id, architecture, parameter count, context length, vocabulary size, tensor types and path. Use the id with generate -m and unload. Prints \"no models loaded\" on stderr when there are none."
}

func (loadCmd) Help() string {
	return `Loads a GGUF file (a path on the daemon's host, which the daemon must be able to read) and prints its model id. Loading a file that is already loaded returns the loaded model. Needs root, the daemon's user or the admin group.

Errors: -32010 no such file; -32011 not a usable model (not a regular file: directory, FIFO, device; corrupt GGUF; unsupported architecture or tensor type); -32030 unauthorized.`
}

func (unloadCmd) Help() string {
	return "Frees a model's memory. Runs in progress with it finish first. Needs root, the daemon's user or the admin group."
}

func (generateCmd) Help() string {
	return `Runs the prompt through the model and streams the generated text to stdout as it comes; a summary line (run id, tokens, finish reason, timings, sampling) goes to stderr. With --json nothing streams: the whole result is printed as JSON at the end.

The model is a model id (enginectl models) or a GGUF path, which the daemon loads on demand (that needs the admin rights of load). Without sampling flags the engine samples greedily; --top-k, --top-p or --seed alone imply --temperature 1. The seed used is reported, so a run can be repeated. Invalid UTF-8 in the prompt is replaced by U+FFFD.

Ctrl-C (or closing the connection) cancels the run in the daemon.`
}

func (discoverCmd) Help() string {
	return "Prints the OpenRPC 1.3 document of the daemon's API (rpc.discover): every method with its params and result schemas, and the generate.token notification."
}

func (h helpCmd) Run(e *env) error {
	_, err := e.parser.Parse(append(h.Command, "--help"))
	if err != nil {
		return usageError{err}
	}
	return nil
}

type loadCmd struct {
	Path string `arg:"" type:"path" help:"Path of the GGUF file, as the daemon sees it."`
	Plan string `help:"Plan: a name, or an inline JSON object."`
}

type unloadCmd struct {
	ID string `arg:"" name:"model-id" help:"Model id (see 'enginectl models')."`
}

type generateCmd struct {
	Model       string   `short:"m" required:"" help:"Model id, or a model path (loaded on demand)."`
	Prompt      string   `short:"p" required:"" help:"Prompt text."`
	MaxTokens   int      `short:"n" name:"max-tokens" help:"Tokens to generate (0: the engine's default)."`
	Temperature *float32 `help:"Sampling temperature; 0 is greedy. Default: the engine's, or 1.0 when --top-k, --top-p or --seed is given."`
	TopK        *int     `name:"top-k" help:"Sample among the K most likely tokens."`
	TopP        *float32 `name:"top-p" help:"Nucleus sampling threshold, in (0,1]."`
	Seed        *uint64  `help:"Sampling seed (recorded in the result)."`
	Plan        string   `help:"Plan: a name, or an inline JSON object."`
}

type env struct {
	parser *kong.Kong
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	socket string
	json   bool
}

// usageError marks command-line mistakes found after parsing.
type usageError struct{ error }

type exitPanic int

// Main runs enginectl with args (without the program name) and returns the
// exit status. getenv reads the environment (os.Getenv in the binary).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) (code int) {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("enginectl"),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitPanic(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintf(stderr, "enginectl: %v\n", err)
		return ExitError
	}
	defer func() {
		if p := recover(); p != nil {
			if e, ok := p.(exitPanic); ok {
				code = int(e)
				return
			}
			panic(p)
		}
	}()
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "enginectl: %v (see enginectl --help)\n", err)
		return ExitUsage
	}
	e := &env{parser: parser, ctx: ctx, stdout: stdout, stderr: stderr, socket: c.Socket, json: c.JSON}
	if e.socket == "" {
		e.socket = getenv(SocketEnv)
	}
	if e.socket == "" {
		e.socket = DefaultSocket
	}
	if err := kctx.Run(e); err != nil {
		return report(stderr, e.socket, err)
	}
	return ExitOK
}

func report(stderr io.Writer, socket string, err error) int {
	var ue usageError
	var de *client.DialError
	var re *rpc.Error
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "enginectl: %v (see enginectl --help)\n", ue.error)
		return ExitUsage
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "enginectl: interrupted")
		return ExitInterrupted
	case errors.As(err, &de):
		fmt.Fprintf(stderr, "enginectl: %s\n", dialMessage(de))
	case errors.As(err, &re):
		fmt.Fprintf(stderr, "enginectl: %s (code %d)\n", re.Message, re.Code)
	case errors.Is(err, client.ErrClosed):
		fmt.Fprintf(stderr, "enginectl: the daemon closed the connection (%s)\n", socket)
	default:
		fmt.Fprintf(stderr, "enginectl: %v\n", err)
	}
	return ExitError
}

func dialMessage(de *client.DialError) string {
	switch {
	case errors.Is(de.Err, syscall.ENOENT):
		return fmt.Sprintf("cannot connect to %s: no such file (is llm-engined running?)", de.Path)
	case errors.Is(de.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot connect to %s: connection refused (is llm-engined running?)", de.Path)
	case errors.Is(de.Err, syscall.EACCES), errors.Is(de.Err, syscall.EPERM):
		return fmt.Sprintf("cannot connect to %s: permission denied (is your user in the socket's group?)", de.Path)
	}
	return de.Error()
}

func (e *env) dial() (*client.Client, error) {
	dctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	return client.DialContext(dctx, e.socket)
}

func (e *env) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

func (infoCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := c.Info(e.ctx)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(info)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "version:\t%s\n", info.Version)
	fmt.Fprintf(tw, "go_version:\t%s\n", info.GoVersion)
	fmt.Fprintf(tw, "backends:\t%s\n", list(info.Backends))
	fmt.Fprintf(tw, "cpu_features:\t%s\n", list(info.CPUFeatures))
	fmt.Fprintf(tw, "num_cpu:\t%d\n", info.NumCPU)
	fmt.Fprintf(tw, "socket:\t%s\n", e.socket)
	return tw.Flush()
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}

func (modelsCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	models, err := c.ListModels(e.ctx)
	if err != nil {
		return err
	}
	if e.json {
		if models == nil {
			models = []engine.ModelInfo{}
		}
		return e.printJSON(models)
	}
	if len(models) == 0 {
		fmt.Fprintln(e.stderr, "no models loaded")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL ID\tARCH\tPARAMS\tCTX\tVOCAB\tTENSOR TYPES\tPATH")
	for _, m := range models {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", m.ModelID, m.Arch, humanCount(m.NParams), m.NCtx, m.NVocab, tensorTypes(m.TensorTypes), m.Path)
	}
	return tw.Flush()
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

func tensorTypes(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, ",")
}

// parsePlan turns --plan into a plan name or an inline object.
func parsePlan(s string) (any, error) {
	if s == "" {
		return nil, nil
	}
	if strings.HasPrefix(strings.TrimSpace(s), "{") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(s), &obj); err != nil {
			return nil, usageError{fmt.Errorf("--plan: invalid JSON: %v", err)}
		}
		return obj, nil
	}
	return s, nil
}

func (l loadCmd) Run(e *env) error {
	plan, err := parsePlan(l.Plan)
	if err != nil {
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	var onProgress func(engine.ModelLoadingEvent)
	if !e.json {
		onProgress = newLoadProgress(e.stderr)
	}
	mi, err := c.LoadModelProgress(e.ctx, engine.LoadRequest{Path: l.Path, Plan: plan}, onProgress)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(mi)
	}
	fmt.Fprintf(e.stdout, "loaded %s: %s, %s params, %s tensors, n_ctx %d, in %.0f ms\n",
		mi.ModelID, mi.Arch, humanCount(mi.NParams), tensorTypes(mi.TensorTypes), mi.NCtx, mi.LoadMS)
	return nil
}

// newLoadProgress shows model.progress notifications on w, a bar (or, off
// a terminal, lines) per phase of the load.
func newLoadProgress(w io.Writer) func(engine.ModelLoadingEvent) {
	names := map[string]string{"quantize": "quantizing at load", "repack": "repacking to x8"}
	var bar *progress.Bar
	phase := ""
	return func(ev engine.ModelLoadingEvent) {
		if ev.Phase != phase || bar == nil {
			if bar != nil {
				bar.Finish()
			}
			name := names[ev.Phase]
			if name == "" {
				name = ev.Phase
			}
			phase, bar = ev.Phase, progress.New(w, name, ev.Total)
		}
		bar.Set(ev.Done, ev.Total)
		if ev.Done == ev.Total {
			bar.Finish()
			bar = nil
		}
	}
}

func (u unloadCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	var res rpc.UnloadResult
	if err := c.Call(e.ctx, rpc.MethodModelUnload, rpc.UnloadParams{ModelID: u.ID}, &res); err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "unloaded %s\n", res.ModelID)
	return nil
}

func (discoverCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	var doc json.RawMessage
	if err := c.Call(e.ctx, rpc.MethodDiscover, nil, &doc); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, doc, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = e.stdout.Write(buf.Bytes())
	return err
}

func (g generateCmd) request() (engine.GenerateRequest, error) {
	req := engine.GenerateRequest{Model: g.Model, Prompt: g.Prompt, MaxTokens: g.MaxTokens}
	if g.MaxTokens < 0 {
		return req, usageError{errors.New("--max-tokens must be >= 0")}
	}
	plan, err := parsePlan(g.Plan)
	if err != nil {
		return req, err
	}
	req.Plan = plan
	if g.Temperature != nil || g.TopK != nil || g.TopP != nil || g.Seed != nil {
		s := &engine.Sampling{Temperature: 1}
		if g.Temperature != nil {
			s.Temperature = *g.Temperature
		}
		if g.TopK != nil {
			s.TopK = *g.TopK
		}
		if g.TopP != nil {
			s.TopP = *g.TopP
		}
		if g.Seed != nil {
			s.Seed = *g.Seed
		}
		req.Sampling = s
	}
	return req, nil
}

func (g generateCmd) Run(e *env) error {
	req, err := g.request()
	if err != nil {
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if e.json {
		res, err := c.Generate(e.ctx, req, nil)
		if err != nil {
			return err
		}
		return e.printJSON(res)
	}
	var last string
	res, err := c.Generate(e.ctx, req, func(ev engine.TokenEvent) {
		if ev.Text != "" {
			io.WriteString(e.stdout, ev.Text)
			last = ev.Text
		}
	})
	if err != nil {
		if last != "" {
			fmt.Fprintln(e.stderr)
		}
		return err
	}
	if last != "" && !strings.HasSuffix(last, "\n") {
		fmt.Fprintln(e.stderr) // end the line on the terminal; stdout keeps the exact text
	}
	m := res.Metrics
	fmt.Fprintf(e.stderr, "[%s %s] %d tokens (%s): prompt %d tokens (%d cached) in %.1f ms, ttft %.1f ms, %.2f tokens/s, latency p50 %.1f ms p95 %.1f ms, temperature %g, seed %d\n",
		res.RunID, res.ModelID, m.GeneratedTokens, res.FinishReason, m.PromptTokens, m.PromptCachedTokens, m.PromptMS, m.TTFTMS,
		m.TokensPerSecond, m.LatencyP50MS, m.LatencyP95MS, res.Sampling.Temperature, res.Sampling.Seed)
	if m.EnergySource != "" {
		// The source is always printed: an estimate is not a measurement.
		fmt.Fprintf(e.stderr, "[%s] energy (%s): %.3f J, %.2f W average, %.1f tokens/J\n",
			res.RunID, m.EnergySource, m.Joules, m.AvgWatts, m.TokensPerJoule)
	}
	return nil
}
