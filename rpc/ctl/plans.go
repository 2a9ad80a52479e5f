package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
	"github.com/weos/llm-engine/rpc/tune"
)

// enginectl plan …, runs, run, cancel, bench, tune, events (issues 4, 7).

type planCmd struct {
	Validate planValidateCmd `cmd:"" help:"Validate a plan file (and resolve it for --model)."`
	Show     planShowCmd     `cmd:"" help:"Show a stored plan (NAME or NAME@VERSION)."`
	Apply    planApplyCmd    `cmd:"" help:"Store FILE as a new version of plan NAME and activate it (admin)."`
	List     planListCmd     `cmd:"" help:"List the stored plans."`
	Schema   planSchemaCmd   `cmd:"" help:"Print the plan's JSON Schema."`
	Diff     planDiffCmd     `cmd:"" help:"Show the differences between two plans (NAME, NAME@VERSION or FILE)."`
	Resolve  planResolveCmd  `cmd:"" help:"Resolve a plan for a model: every default and per-tensor decision, and the hash."`
	Propose  planProposeCmd  `cmd:"" help:"Propose FILE as a candidate version of plan NAME (any user)."`
	Promote  planPromoteCmd  `cmd:"" help:"Make version VERSION of plan NAME active (admin)."`
	Rollback planRollbackCmd `cmd:"" help:"Re-activate the previous version of plan NAME (admin)."`
	History  planHistoryCmd  `cmd:"" help:"Show the audit log of plan NAME."`
	Delete   planDeleteCmd   `cmd:"" help:"Delete plan NAME and all its versions (admin)."`
}

func (planCmd) Help() string {
	return `Execution plans: what the engine runs a model with (backend, quantization, threads, scheduler, limits, sampling). Plans are JSON documents validated against a schema (enginectl plan schema); every problem is reported with the JSON pointer of the field at fault. Stored plans have versions; "NAME" means the active version, "NAME@N" a given one. generate, load and bench take --plan NAME or an inline JSON object.`
}

type planValidateCmd struct {
	File  string `arg:"" help:"Plan file (JSON); - for stdin."`
	Model string `help:"Also resolve the plan for this model (id or path)."`
}

type planShowCmd struct {
	Ref string `arg:"" help:"NAME or NAME@VERSION."`
}

type planApplyCmd struct {
	Name      string `arg:"" help:"Plan name."`
	File      string `arg:"" help:"Plan file (JSON); - for stdin."`
	Rationale string `help:"Why (recorded in the audit log)."`
}

type planListCmd struct{}
type planSchemaCmd struct{}

type planDiffCmd struct {
	A string `arg:"" help:"NAME, NAME@VERSION or a file."`
	B string `arg:"" help:"NAME, NAME@VERSION or a file."`
}

type planResolveCmd struct {
	Ref   string `arg:"" help:"NAME, NAME@VERSION or a file."`
	Model string `required:"" short:"m" help:"Model id or path."`
}

type planProposeCmd struct {
	Name      string `arg:"" help:"Plan name."`
	File      string `arg:"" help:"Plan file (JSON); - for stdin."`
	Rationale string `required:"" help:"Why this plan is better."`
	Evidence  string `help:"File with JSON evidence (e.g. enginectl --json bench output)."`
}

type planPromoteCmd struct {
	Name      string `arg:"" help:"Plan name."`
	Version   int    `arg:"" help:"Version to activate."`
	Rationale string `help:"Why (recorded in the audit log)."`
}

type planRollbackCmd struct {
	Name      string `arg:"" help:"Plan name."`
	Rationale string `help:"Why (recorded in the audit log)."`
}

type planHistoryCmd struct {
	Name  string `arg:"" help:"Plan name."`
	Limit int    `short:"n" help:"Only the last N entries."`
}

type planDeleteCmd struct {
	Name string `arg:"" help:"Plan name."`
}

func readDoc(path string, stdin io.Reader) (json.RawMessage, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// reportPlanErrors prints -32020's problems, one per line, and returns err.
func (e *env) reportPlanErrors(err error) error {
	for _, fe := range client.PlanErrors(err) {
		fmt.Fprintf(e.stderr, "  %s\n", fe)
	}
	return err
}

func (p planValidateCmd) Run(e *env) error {
	doc, err := readDoc(p.File, os.Stdin)
	if err != nil {
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.ValidatePlan(e.ctx, doc, p.Model)
	if err != nil {
		if client.PlanErrors(err) != nil {
			fmt.Fprintf(e.stderr, "%s: invalid\n", p.File)
		}
		return e.reportPlanErrors(err)
	}
	if e.json {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "%s: valid\n", p.File)
	if r := res.Resolved; r != nil {
		printResolvedSummary(e.stdout, r)
	}
	return nil
}

func printResolvedSummary(w io.Writer, r *plan.Resolved) {
	p := r.Plan
	s := p.Scheduler
	fmt.Fprintf(w, "hash %s\nbackend %s, threads %d, quantization %s, scheduler %s/%s max_batch %d max_queue %d max_wait_ms %d\n",
		r.Hash, *p.Backend, *p.Threads, *p.Quantization.Default, *s.Mode, *s.Policy, *s.MaxBatch, *s.MaxQueue, *s.MaxWaitMS)
	conv := 0
	for _, d := range r.Tensors {
		if !d.FromFile {
			conv++
		}
	}
	fmt.Fprintf(w, "%d tensors (%d converted at load), kernels %v\n", len(r.Tensors), conv, r.Kernels)
	for _, wn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", wn)
	}
}

func (p planShowCmd) Run(e *env) error {
	name, v, err := engine.ParsePlanRef(p.Ref)
	if err != nil {
		return usageError{err}
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.GetPlan(e.ctx, name, v)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stderr, "%s@%d (%s; active version %d; created %s)\n", res.Name, res.Version, res.Status, res.Active, res.Created.Format(time.RFC3339))
	var buf bytes.Buffer
	if json.Indent(&buf, res.Plan, "", "  ") != nil {
		buf.Reset()
		buf.Write(res.Plan)
	}
	buf.WriteByte('\n')
	_, err = e.stdout.Write(bytes.TrimRight(buf.Bytes(), "\n"))
	fmt.Fprintln(e.stdout)
	return err
}

func (p planApplyCmd) Run(e *env) error {
	doc, err := readDoc(p.File, os.Stdin)
	if err != nil {
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.PutPlan(e.ctx, p.Name, doc, p.Rationale)
	if err != nil {
		return e.reportPlanErrors(err)
	}
	return e.printChange(res, "stored and activated")
}

func (e *env) printChange(res *engine.PlanChangeResult, what string) error {
	if e.json {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "%s@%d %s (active: %d, was %d)\n", res.Name, res.Version, what, res.Active, res.PreviousActive)
	printChanges(e.stdout, res.Changes)
	return nil
}

func printChanges(w io.Writer, ch []plan.Change) {
	for _, c := range ch {
		fmt.Fprintf(w, "  %s: %s → %s\n", c.Pointer, jsonOrAbsent(c.Old), jsonOrAbsent(c.New))
	}
}

func jsonOrAbsent(v any) string {
	if v == nil {
		return "(absent)"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func (planListCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.ListPlans(e.ctx)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tACTIVE\tLATEST\tVERSIONS")
	for _, p := range res.Plans {
		vs := make([]string, len(p.Versions))
		for i, v := range p.Versions {
			vs[i] = strconv.Itoa(v)
		}
		active := strconv.Itoa(p.Active)
		if p.Active == 0 {
			active = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", p.Name, active, p.Latest, strings.Join(vs, ","))
	}
	return tw.Flush()
}

func (planSchemaCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.PlanSchema(e.ctx)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, s, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = e.stdout.Write(buf.Bytes())
	return err
}

// loadRef reads a plan given as a file (if one exists at that path) or as
// NAME / NAME@VERSION from the daemon.
func loadRef(e *env, c *client.Client, ref string) (*plan.Plan, string, error) {
	if st, err := os.Stat(ref); err == nil && !st.IsDir() {
		raw, err := os.ReadFile(ref)
		if err != nil {
			return nil, "", err
		}
		p, es, err := plan.Validate(raw)
		if err != nil {
			return nil, "", err
		}
		if len(es) > 0 {
			return nil, "", fmt.Errorf("%s: invalid plan: %v", ref, plan.FieldErrors(es))
		}
		return p, ref, nil
	}
	name, v, err := engine.ParsePlanRef(ref)
	if err != nil {
		return nil, "", usageError{fmt.Errorf("%s is neither a file nor a plan reference: %v", ref, err)}
	}
	res, err := c.GetPlan(e.ctx, name, v)
	if err != nil {
		return nil, "", err
	}
	p, es, err := plan.Validate(res.Plan)
	if err != nil || len(es) > 0 {
		return nil, "", fmt.Errorf("%s@%d: %v %v", name, res.Version, err, es)
	}
	return p, fmt.Sprintf("%s@%d", name, res.Version), nil
}

func (p planDiffCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	a, an, err := loadRef(e, c, p.A)
	if err != nil {
		return err
	}
	b, bn, err := loadRef(e, c, p.B)
	if err != nil {
		return err
	}
	ch := plan.Diff(a, b)
	if e.json {
		if ch == nil {
			ch = []plan.Change{}
		}
		return e.printJSON(ch)
	}
	if len(ch) == 0 {
		fmt.Fprintf(e.stdout, "%s and %s are the same plan\n", an, bn)
		return nil
	}
	fmt.Fprintf(e.stdout, "--- %s\n+++ %s\n", an, bn)
	printChanges(e.stdout, ch)
	return nil
}

func (p planResolveCmd) Run(e *env) error {
	var ref json.RawMessage
	if st, err := os.Stat(p.Ref); err == nil && !st.IsDir() {
		if ref, err = os.ReadFile(p.Ref); err != nil {
			return err
		}
	} else {
		ref, _ = json.Marshal(p.Ref)
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.ResolvePlan(e.ctx, ref, p.Model)
	if err != nil {
		return e.reportPlanErrors(err)
	}
	if e.json {
		return e.printJSON(r)
	}
	printResolvedSummary(e.stdout, r)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENSOR\tSOURCE\tTARGET\tRULE\tREASON")
	for _, d := range r.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Source, d.Target, d.Rule, d.Reason)
	}
	return tw.Flush()
}

func (p planProposeCmd) Run(e *env) error {
	doc, err := readDoc(p.File, os.Stdin)
	if err != nil {
		return err
	}
	var ev json.RawMessage
	if p.Evidence != "" {
		if ev, err = os.ReadFile(p.Evidence); err != nil {
			return err
		}
		if !json.Valid(ev) {
			return usageError{fmt.Errorf("--evidence %s: not JSON", p.Evidence)}
		}
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.ProposePlan(e.ctx, engine.PlanProposeRequest{Name: p.Name, Plan: doc, Rationale: p.Rationale, Evidence: ev})
	if err != nil {
		return e.reportPlanErrors(err)
	}
	return e.printChange(res, "proposed")
}

func (p planPromoteCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.PromotePlan(e.ctx, p.Name, p.Version, p.Rationale)
	if err != nil {
		return e.reportPlanErrors(err)
	}
	return e.printChange(res, "promoted")
}

func (p planRollbackCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.RollbackPlan(e.ctx, p.Name, p.Rationale)
	if err != nil {
		return err
	}
	return e.printChange(res, "restored")
}

func (p planDeleteCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.DeletePlan(e.ctx, p.Name)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "deleted %s\n", res.Name)
	return nil
}

func (p planHistoryCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.PlanHistory(e.ctx, p.Name, p.Limit)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	for _, en := range res.Entries {
		v := ""
		if en.Version > 0 {
			v = fmt.Sprintf(" version %d", en.Version)
		}
		fmt.Fprintf(e.stdout, "#%d %s %s%s by %s (admin %v); active %d → %d\n", en.Seq, en.Time.Format(time.RFC3339), en.Action, v, en.Actor, en.Actor.Admin, en.PreviousActive, en.Active)
		if en.Rationale != "" {
			fmt.Fprintf(e.stdout, "  why: %s\n", en.Rationale)
		}
		printChanges(e.stdout, en.Changes)
		for _, fe := range en.Errors {
			fmt.Fprintf(e.stdout, "  error %s\n", fe)
		}
		if len(en.Evidence) > 0 {
			fmt.Fprintf(e.stdout, "  evidence: %d bytes\n", len(en.Evidence))
		}
	}
	return nil
}

// ---- runs ----

type runsCmd struct {
	Limit int    `short:"n" default:"20" help:"Most runs to show."`
	Since string `help:"Only runs queued since this time (RFC 3339) or duration ago (e.g. 1h)."`
	// runs show ID: the same as run ID.
	Show string `arg:"" optional:"" name:"show" help:"show RUN-ID: show that run's record (as enginectl run RUN-ID)."`
	ID   string `arg:"" optional:"" name:"run-id" help:"Run id, after show."`
}

type runCmd struct {
	ID string `arg:"" name:"run-id" help:"Run id (see enginectl runs)."`
}

type cancelCmd struct {
	ID string `arg:"" name:"run-id" help:"Run id (see enginectl runs)."`
}

func (runsCmd) Help() string {
	return "Runs in progress, then recorded runs, newest first: id, status, model, plan (name@version and hash prefix), finish reason, tokens, decode tokens/s, time to first token."
}

func (r runsCmd) Run(e *env) error {
	switch {
	case r.Show == "show" && r.ID != "":
		return runCmd{ID: r.ID}.Run(e)
	case r.Show != "" || r.ID != "":
		return usageError{errors.New("usage: enginectl runs [show RUN-ID]")}
	}
	req := engine.RunListRequest{Limit: r.Limit}
	if r.Since != "" {
		if d, err := time.ParseDuration(r.Since); err == nil {
			req.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, r.Since); err == nil {
			req.Since = t
		} else {
			return usageError{fmt.Errorf("--since %q: give an RFC 3339 time or a duration", r.Since)}
		}
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.ListRuns(e.ctx, req)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	if len(res.Runs) == 0 {
		fmt.Fprintln(e.stderr, "no runs")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN ID\tSTATUS\tMODEL\tPLAN\tFINISH\tTOKENS\tTOK/S\tTTFT MS")
	for _, s := range res.Runs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%d\t%.1f\t%.1f\n", s.RunID, s.Status, s.ModelID, s.Plan, shortHash(s.Plan.Hash),
			dash(s.FinishReason), s.GeneratedTokens, s.TokensPerSecond, s.TTFTMS)
	}
	return tw.Flush()
}

func shortHash(h string) string {
	h = strings.TrimPrefix(h, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (r runCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	rec, err := c.GetRun(e.ctx, r.ID)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(rec)
	}
	m := rec.Metrics
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "run:\t%s (%s)\n", rec.RunID, rec.Status)
	fmt.Fprintf(tw, "by:\t%s\n", rec.Actor)
	fmt.Fprintf(tw, "model:\t%s (%s)\n", rec.ModelID, rec.ModelPath)
	fmt.Fprintf(tw, "plan:\t%s %s\n", rec.Plan, rec.PlanHash)
	if r := rec.Resolved; r != nil {
		p := r.Plan
		fmt.Fprintf(tw, "resolved:\tbackend %s, threads %d, quantization %s, %s/%s max_batch %d\n", *p.Backend, *p.Threads, *p.Quantization.Default, *p.Scheduler.Mode, *p.Scheduler.Policy, *p.Scheduler.MaxBatch)
	}
	fmt.Fprintf(tw, "prompt:\t%q (%d tokens)\n", rec.Request.Prompt, len(rec.PromptTokens))
	fmt.Fprintf(tw, "output:\t%q (%d tokens, %s)\n", rec.Text, len(rec.Tokens), dash(rec.FinishReason))
	if rec.Error != "" {
		fmt.Fprintf(tw, "error:\t%s\n", rec.Error)
	}
	fmt.Fprintf(tw, "sampling:\ttemperature %g, top_k %d, top_p %g, seed %d\n", rec.Sampling.Temperature, rec.Sampling.TopK, rec.Sampling.TopP, rec.Sampling.Seed)
	fmt.Fprintf(tw, "timing:\tqueue %.1f ms, prompt %.1f ms (%.1f tok/s, %d tokens cached), ttft %.1f ms, decode %.2f tok/s, latency p50 %.1f ms p95 %.1f ms, total %.1f ms\n",
		m.QueueMS, m.PromptMS, m.PromptTokensPerSecond, m.PromptCachedTokens, m.TTFTMS, m.TokensPerSecond, m.LatencyP50MS, m.LatencyP95MS, m.TotalMS)
	if m.EnergySource != "" {
		fmt.Fprintf(tw, "energy:\t%.3f J (%s), %.2f tok/J\n", m.Joules, m.EnergySource, m.TokensPerJoule)
	}
	return tw.Flush()
}

func (r cancelCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.CancelRun(e.ctx, r.ID)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	if res.Cancelled {
		fmt.Fprintf(e.stdout, "cancelled %s\n", res.RunID)
	} else {
		fmt.Fprintf(e.stdout, "%s had already finished\n", res.RunID)
	}
	return nil
}

// ---- bench, tune, events ----

type benchCmd struct {
	Model       string   `short:"m" required:"" help:"Model id, or a path (loading it needs admin rights)."`
	Plan        []string `required:"" help:"Plan to compare (NAME, NAME@VERSION or an inline JSON object); repeat: the first is the reference."`
	Prompt      []string `short:"p" help:"Prompt (repeatable); default: the built-in set."`
	MaxTokens   int      `short:"n" name:"max-tokens" default:"32" help:"Tokens per run."`
	Repetitions int      `short:"r" default:"3" help:"Repetitions of the prompt set per plan."`
	Concurrency int      `short:"c" default:"1" help:"Concurrent streams per round."`
	MaxSeconds  float64  `name:"max-seconds" help:"Time budget."`
	MaxJoules   float64  `name:"max-joules" help:"Energy budget (needs an energy meter)."`
}

func (benchCmd) Help() string {
	return `Runs the same workload under each plan, interleaved (A B A B …), and prints per plan the median [p5, p95] of decode tokens/s and time to first token, the p95 inter-token latency, tokens per joule with the energy source ("unavailable" without a meter), whether the outputs equal the first plan's, and the ratio to the first plan. --max-seconds / --max-joules stop it early.`
}

func planArg(s string) (json.RawMessage, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "{") {
		if !json.Valid([]byte(s)) {
			return nil, usageError{fmt.Errorf("--plan %s: invalid JSON", s)}
		}
		return json.RawMessage(s), nil
	}
	b, _ := json.Marshal(s)
	return b, nil
}

func (b benchCmd) Run(e *env) error {
	req := engine.BenchRequest{Model: b.Model, Workload: engine.BenchWorkload{Prompts: b.Prompt, MaxTokens: b.MaxTokens, Repetitions: b.Repetitions, Concurrency: b.Concurrency},
		Budget: engine.BenchBudget{MaxSeconds: b.MaxSeconds, MaxJoules: b.MaxJoules}}
	for _, p := range b.Plan {
		raw, err := planArg(p)
		if err != nil {
			return err
		}
		req.Plans = append(req.Plans, raw)
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Bench(e.ctx, req, func(p engine.BenchProgress) {
		if !e.json {
			fmt.Fprintf(e.stderr, "\r[%d/%d] %s %.1f tok/s, %.1fs", p.Done, p.Total, p.Plan, p.TokensPerSecond, p.ElapsedS)
		}
	})
	if !e.json {
		fmt.Fprintln(e.stderr)
	}
	if err != nil {
		return e.reportPlanErrors(err)
	}
	if e.json {
		return e.printJSON(res)
	}
	printBench(e.stdout, res)
	return nil
}

func printBench(w io.Writer, res *engine.BenchResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAN\tRUNS\tTOK/S MEDIAN [P5, P95]\tTTFT MS MEDIAN [P5, P95]\tP95 LAT MS\tAGG TOK/S\tTOK/J\tIDENTICAL\tRATIO")
	for _, p := range res.Plans {
		t, f := p.TokensPerSecond, p.TTFTMS
		tpj := p.EnergySource
		if p.TokensPerJoule != nil {
			tpj = fmt.Sprintf("%.2f (%s)", *p.TokensPerJoule, p.EnergySource)
		}
		fmt.Fprintf(tw, "%s %s\t%d\t%.1f [%.1f, %.1f]\t%.1f [%.1f, %.1f]\t%.1f\t%.1f\t%s\t%v\t%.3f\n", p.Label, shortHash(p.Plan.Hash), p.Runs,
			t.Median, t.P5, t.P95, f.Median, f.P5, f.P95, p.LatencyP95MS, p.AggregateTokensPerSecond, tpj, p.Identical, p.RatioToFirst)
	}
	tw.Flush()
	state := "completed"
	if !res.Completed {
		state = "stopped by " + dash(res.StoppedBy)
	}
	fmt.Fprintf(w, "%s: %d/%d runs in %.1fs, outputs identical across plans: %v\n", res.BenchID, res.Runs, res.PlannedRuns, res.ElapsedS, res.OutputsIdentical)
	fmt.Fprintf(w, "%s\n", state)
}

type tuneCmd struct {
	Model         string   `short:"m" required:"" help:"Model id (or a path: needs admin rights)."`
	Name          string   `default:"default" help:"Plan to tune: its active version is the base; the winner is proposed as its next version."`
	Objective     string   `enum:"energy,throughput" default:"energy" help:"energy: most tokens per joule; throughput: most tokens per second."`
	MaxP95MS      float64  `name:"max-p95-ms" help:"Bound on the p95 inter-token latency (ms)."`
	Threads       []int    `help:"Thread counts to try (default: 1 and all)." sep:","`
	Quantizations []string `name:"quant" help:"Quantization schemes to try (default: the base's)." sep:","`
	Batches       []int    `name:"batch" help:"Batch sizes to try (1: simple mode; default 1,8)." sep:","`
	KVTypes       []string `name:"kv" help:"KV cache types to try (F32, F16; default: the base's)." sep:","`
	MaxTokens     int      `short:"n" name:"max-tokens" default:"24" help:"Tokens per run."`
	Repetitions   int      `short:"r" default:"2" help:"Repetitions per bench."`
	MaxSeconds    float64  `name:"max-seconds" default:"60" help:"Time budget of each bench."`
	DryRun        bool     `name:"dry-run" help:"Do not propose the winner."`
}

func (tuneCmd) Help() string {
	return `Explores threads × quantization × batch × KV cache type around plan NAME's active version with bench.run (each candidate against the base, interleaved), keeps the candidates whose p95 inter-token latency is within --max-p95-ms, and proposes the best (tokens per joule, or tokens per second without an energy meter or with --objective throughput) as a candidate version of NAME with the benchmark as evidence. An admin then promotes it: enginectl plan promote NAME VERSION. The same loop as contrib/agent.`
}

func (t tuneCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	threads := t.Threads
	if len(threads) == 0 {
		info, err := c.Info(e.ctx)
		if err != nil {
			return err
		}
		threads = []int{1}
		if info.NumCPU > 1 {
			threads = append(threads, info.NumCPU)
		}
	}
	batches := t.Batches
	if len(batches) == 0 {
		batches = []int{1, 8}
	}
	o := tune.Options{Model: t.Model, Name: t.Name, Objective: t.Objective, MaxP95MS: t.MaxP95MS, Threads: threads,
		Quantizations: t.Quantizations, Batches: batches, KVTypes: t.KVTypes, Propose: !t.DryRun,
		Workload: engine.BenchWorkload{MaxTokens: t.MaxTokens, Repetitions: t.Repetitions},
		Budget:   engine.BenchBudget{MaxSeconds: t.MaxSeconds},
		Logf:     func(f string, a ...any) { fmt.Fprintf(e.stderr, f+"\n", a...) }}
	out, err := tune.Run(e.ctx, c, o)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(out)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CANDIDATE\tSCORE\tP95 LAT MS\tFEASIBLE\tNOTE")
	for _, cd := range append([]tune.Candidate{out.Base}, out.Candidates...) {
		lat := "-"
		if cd.Result != nil {
			lat = fmt.Sprintf("%.1f", cd.Result.LatencyP95MS)
		}
		note := cd.Why
		if cd.Skipped != "" {
			note = cd.Skipped
		}
		fmt.Fprintf(tw, "%s\t%.3f %s\t%s\t%v\t%s\n", cd.Label, cd.Score, cd.ScoreKind, lat, cd.Feasible, note)
	}
	tw.Flush()
	if out.Note != "" {
		fmt.Fprintf(e.stdout, "note: %s\n", out.Note)
	}
	switch {
	case out.Winner == nil:
		fmt.Fprintln(e.stdout, "no winner")
	case out.Proposal != nil:
		fmt.Fprintf(e.stdout, "proposed %s@%d (%s); promote with: enginectl plan promote %s %d\n", out.Proposal.Name, out.Proposal.Version, out.Winner.Label, out.Proposal.Name, out.Proposal.Version)
	default:
		fmt.Fprintf(e.stdout, "winner: %s\n", out.Winner.Label)
	}
	return nil
}

type eventsCmd struct {
	Topic []string `help:"Topics: run, plan, power, model (repeatable; default all)."`
}

func (eventsCmd) Help() string {
	return "Prints the engine's events as JSON lines ({method, params}) until interrupted: runs starting and finishing, plan changes with their diff and actor, models loaded, power samples."
}

func (ev eventsCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	enc := json.NewEncoder(e.stdout)
	res, err := c.Subscribe(e.ctx, ev.Topic, func(method string, params json.RawMessage) {
		enc.Encode(struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}{method, params})
	})
	if err != nil {
		var re *rpc.Error
		if errors.As(err, &re) {
			return err
		}
		return err
	}
	fmt.Fprintf(e.stderr, "subscription ended: %s\n", res.Reason)
	return nil
}
