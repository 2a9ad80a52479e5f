package engine

import (
	"encoding/json"
	"time"

	"github.com/weos/llm-engine/engine/plan"
)

// Wire types of the plan, run, metrics, events and bench methods (issues 4
// and 7). Plans travel as raw JSON so that engine/plan validates them and
// reports problems by JSON pointer.

// PlanUse says which plan a run or a loaded model used.
type PlanUse struct {
	// Name and Version of a stored plan; Name is "" for an inline plan.
	Name    string `json:"name,omitempty"`
	Version int    `json:"version,omitempty"`
	// Hash of the resolved plan ("sha256:…").
	Hash string `json:"hash"`
}

// String is "name@version", or "inline" for an inline plan.
func (u PlanUse) String() string {
	if u.Name == "" {
		return "inline"
	}
	return u.Name + "@" + itoa(u.Version)
}

// PlanValidateRequest is plan.validate's params.
type PlanValidateRequest struct {
	// The plan document (an object).
	Plan json.RawMessage `json:"plan"`
	// Optional: a model id or path; the plan is then also resolved for it.
	Model string `json:"model,omitempty"`
}

// PlanValidateResult is plan.validate's result (an invalid plan is an
// error -32020 whose data lists the problems by JSON pointer).
type PlanValidateResult struct {
	Valid bool       `json:"valid"`
	Plan  *plan.Plan `json:"plan"`
	// Set when a model was given.
	Resolved *plan.Resolved `json:"resolved,omitempty"`
}

// PlanResolveRequest is plan.resolve's params.
type PlanResolveRequest struct {
	// An inline plan object, or a string naming a stored plan: "name" (its
	// active version) or "name@version".
	Plan json.RawMessage `json:"plan"`
	// A loaded model id or a model path.
	Model string `json:"model"`
}

// PlanPutRequest is plan.put's params: store and activate a new version.
type PlanPutRequest struct {
	Name      string          `json:"name"`
	Plan      json.RawMessage `json:"plan"`
	Rationale string          `json:"rationale,omitempty"`
}

// PlanProposeRequest is plan.propose's params: store a candidate version,
// not active until promoted.
type PlanProposeRequest struct {
	Name      string          `json:"name"`
	Plan      json.RawMessage `json:"plan"`
	Rationale string          `json:"rationale"`
	// Any JSON supporting the proposal (e.g. a bench.run result).
	Evidence json.RawMessage `json:"evidence,omitempty"`
}

// PlanPromoteRequest is plan.promote's params.
type PlanPromoteRequest struct {
	Name      string `json:"name"`
	Version   int    `json:"version"`
	Rationale string `json:"rationale,omitempty"`
}

// PlanNameRequest is the params of plan.delete, plan.rollback and
// plan.history.
type PlanNameRequest struct {
	Name      string `json:"name"`
	Rationale string `json:"rationale,omitempty"`
	// plan.history only: most recent entries to return (0: all).
	Limit int `json:"limit,omitempty"`
}

// PlanGetRequest is plan.get's params.
type PlanGetRequest struct {
	Name string `json:"name"`
	// 0 or absent: the active version.
	Version int `json:"version,omitempty"`
}

// PlanChangeResult is the result of plan.put, plan.propose, plan.promote,
// plan.rollback and plan.delete.
type PlanChangeResult struct {
	Name    string `json:"name"`
	Version int    `json:"version"` // the version stored, promoted or restored
	// Active is the active version after the call (0: none, after delete).
	Active int `json:"active"`
	// PreviousActive is the active version before the call.
	PreviousActive int `json:"previous_active"`
	// Changes from the previously active version to Version.
	Changes []plan.Change `json:"changes"`
	// AuditSeq is the audit log entry recording the change.
	AuditSeq int64 `json:"audit_seq"`
}

// PlanGetResult is plan.get's result.
type PlanGetResult struct {
	Name    string    `json:"name"`
	Version int       `json:"version"`
	Active  int       `json:"active"` // the plan's active version
	Status  string    `json:"status"` // "active", "candidate" (never active) or "inactive"
	Created time.Time `json:"created"`
	// The document as stored.
	Plan json.RawMessage `json:"plan"`
}

// PlanSummary is one entry of plan.list.
type PlanSummary struct {
	Name     string `json:"name"`
	Active   int    `json:"active"`
	Latest   int    `json:"latest"`
	Versions []int  `json:"versions"`
}

// PlanListResult is plan.list's result.
type PlanListResult struct {
	Plans []PlanSummary `json:"plans"`
}

// Audit log actions.
const (
	AuditPut      = "put"
	AuditPropose  = "propose"
	AuditReject   = "reject" // a put or proposal that failed validation
	AuditPromote  = "promote"
	AuditRollback = "rollback"
	AuditDelete   = "delete"
)

// AuditEntry is one line of the plan audit log: who did what to which plan,
// when and why.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Action string    `json:"action"`
	Name   string    `json:"name"`
	// Version stored, promoted or restored (0 for a rejection).
	Version        int             `json:"version,omitempty"`
	PreviousActive int             `json:"previous_active,omitempty"`
	Active         int             `json:"active"`
	Actor          Actor           `json:"actor"`
	Changes        []plan.Change   `json:"changes,omitempty"`
	Rationale      string          `json:"rationale,omitempty"`
	Evidence       json.RawMessage `json:"evidence,omitempty"`
	// Errors of a rejected document, by JSON pointer.
	Errors []plan.FieldError `json:"errors,omitempty"`
}

// PlanHistoryResult is plan.history's result, oldest first.
type PlanHistoryResult struct {
	Entries []AuditEntry `json:"entries"`
}

// Run states.
const (
	RunQueued   = "queued"
	RunRunning  = "running"
	RunFinished = "finished"
)

// RunRecord is everything about one run: what was asked, the resolved plan
// it ran under, what came out and how fast. Finished runs are stored in the
// state directory (a line of runs/runs.jsonl).
type RunRecord struct {
	RunID  string `json:"run_id"`
	Status string `json:"status"`
	Actor  Actor  `json:"actor"`
	// BenchID is set for runs made by bench.run.
	BenchID      string          `json:"bench_id,omitempty"`
	Request      GenerateRequest `json:"request"`
	ModelID      string          `json:"model_id"`
	ModelPath    string          `json:"model_path"`
	Plan         PlanUse         `json:"plan"`
	PlanHash     string          `json:"plan_hash"`
	Resolved     *plan.Resolved  `json:"resolved_plan"`
	PromptTokens []int32         `json:"prompt_tokens"`
	Tokens       []int32         `json:"tokens"`
	Text         string          `json:"text"`
	FinishReason string          `json:"finish_reason,omitempty"`
	Error        string          `json:"error,omitempty"`
	Sampling     Sampling        `json:"sampling"`
	MaxTokens    int             `json:"max_tokens"`
	Metrics      RunMetrics      `json:"metrics"`
	// LogitsDigests of every step, when the request asked for them.
	LogitsDigests []string  `json:"logits_digests,omitempty"`
	QueuedAt      time.Time `json:"queued_at"`
	StartedAt     time.Time `json:"started_at,omitzero"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
	EngineVersion string    `json:"engine_version"`
}

// RunSummary is one entry of run.list.
type RunSummary struct {
	RunID           string    `json:"run_id"`
	Status          string    `json:"status"`
	ModelID         string    `json:"model_id"`
	Plan            PlanUse   `json:"plan"`
	FinishReason    string    `json:"finish_reason,omitempty"`
	GeneratedTokens int       `json:"generated_tokens"`
	TokensPerSecond float64   `json:"tokens_per_second"`
	TTFTMS          float64   `json:"ttft_ms"`
	TotalMS         float64   `json:"total_ms"`
	QueuedAt        time.Time `json:"queued_at"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`
	BenchID         string    `json:"bench_id,omitempty"`
	Actor           Actor     `json:"actor"`
}

// RunIDRequest is the params of run.get and run.cancel.
type RunIDRequest struct {
	RunID string `json:"run_id"`
}

// RunListRequest is run.list's params.
type RunListRequest struct {
	// Only runs queued at or after this time (RFC 3339).
	Since time.Time `json:"since,omitzero"`
	// Most runs to return, newest first (default 50, at most 1000).
	Limit int `json:"limit,omitempty"`
}

// RunListResult is run.list's result: runs in progress first, then
// finished ones, newest first.
type RunListResult struct {
	Runs []RunSummary `json:"runs"`
}

// RunCancelResult is run.cancel's result.
type RunCancelResult struct {
	RunID string `json:"run_id"`
	// Cancelled is true when the run was queued or running: it stops at
	// its next step and frees its KV cache; its result and record say
	// "cancelled". False when it had already finished.
	Cancelled bool   `json:"cancelled"`
	Status    string `json:"status"`
}

// Spread summarises a sample: median and 5th/95th percentiles
// (nearest rank).
type Spread struct {
	Median float64 `json:"median"`
	P5     float64 `json:"p5"`
	P95    float64 `json:"p95"`
	N      int     `json:"n"`
}

// LaneStats describe one scheduler: a loaded model under one set of
// run-time decisions (threads, scheduler settings).
type LaneStats struct {
	ModelID string `json:"model_id"`
	// Threads are the worker threads its forward passes run on (the
	// plan's threads).
	Threads  int    `json:"threads"`
	Mode     string `json:"mode"`
	Policy   string `json:"policy"`
	MaxBatch int    `json:"max_batch"`
	// Scheduler counters (engine/sched.Stats).
	Queued      int           `json:"queued"`
	Active      int           `json:"active"`
	MaxActive   int           `json:"max_active"`
	Rejected    int64         `json:"rejected"`
	Completed   int64         `json:"completed"`
	Cancelled   int64         `json:"cancelled"`
	Steps       int64         `json:"steps"`
	StepsBySize map[int]int64 `json:"steps_by_size"`
	// The energy policy's target batch size (0 for other policies).
	EnergyTarget int `json:"energy_target,omitempty"`
	// KV states of finished sequences kept for the next ones (at most
	// max_batch), and their bytes (not in SchedStats.KVBytes).
	IdleStates  int   `json:"idle_states"`
	IdleKVBytes int64 `json:"idle_kv_bytes"`
}

// SchedStats is sched.stats's result.
type SchedStats struct {
	// Runs accepted and not yet replied to.
	RunsInProgress int `json:"runs_in_progress"`
	// Sequences holding a KV cache now, and its bytes (KV cache and the
	// sequences' buffers).
	ActiveSequences int         `json:"active_sequences"`
	KVBytes         int64       `json:"kv_bytes"`
	Lanes           []LaneStats `json:"lanes"`
	// Event subscribers connected now.
	Subscribers int `json:"subscribers"`
	// The last failure to write a run record (kept in memory, retried).
	RecordError string `json:"record_error,omitempty"`
}

// Event topics and notification names of events.subscribe.
const (
	TopicRun   = "run"
	TopicPlan  = "plan"
	TopicPower = "power"
	TopicModel = "model"

	EventRunStarted    = "event.run.started"
	EventRunFinished   = "event.run.finished"
	EventPlanChanged   = "event.plan.changed"
	EventPlanProposed  = "event.plan.proposed"
	EventPlanRejected  = "event.plan.rejected"
	EventModelLoaded   = "event.model.loaded"
	EventModelUnloaded = "event.model.unloaded"
	EventModelLoading  = "event.model.loading" // quantization progress while loading
	EventPowerSample   = "event.power.sample"
	// EventDropped is the last notification a subscriber gets when it is
	// dropped for not keeping up.
	EventDropped = "event.dropped"
)

// Topics lists the event topics.
func Topics() []string { return []string{TopicRun, TopicPlan, TopicPower, TopicModel} }

// RunEvent is the params of event.run.started and event.run.finished.
type RunEvent struct {
	RunID   string  `json:"run_id"`
	ModelID string  `json:"model_id"`
	Plan    PlanUse `json:"plan"`
	Actor   Actor   `json:"actor"`
	BenchID string  `json:"bench_id,omitempty"`
	// finished only
	FinishReason string      `json:"finish_reason,omitempty"`
	Error        string      `json:"error,omitempty"`
	Metrics      *RunMetrics `json:"metrics,omitempty"`
	Time         time.Time   `json:"time"`
}

// PlanEvent is the params of event.plan.changed, .proposed and .rejected:
// the audit entry.
type PlanEvent = AuditEntry

// ModelEvent is the params of event.model.loaded and event.model.unloaded.
type ModelEvent struct {
	ModelID string    `json:"model_id"`
	Path    string    `json:"path"`
	Plan    PlanUse   `json:"plan"`
	Actor   Actor     `json:"actor"`
	Time    time.Time `json:"time"`
}

// ModelLoadingEvent is event.model.loading's params (at most every 10% of
// the work) and model.progress's (to the caller of model.load, at most
// every 1%): the phase of the load ("quantize": the tensors a plan converts,
// in source bytes; "repack": the matrices moved to the x8 weight layout, in
// bytes) and how far it is.
type ModelLoadingEvent struct {
	Path     string  `json:"path"`
	Plan     PlanUse `json:"plan"`
	Phase    string  `json:"phase"`
	Done     int64   `json:"done_bytes"`
	Total    int64   `json:"total_bytes"`
	Fraction float64 `json:"fraction"`
}

// DroppedEvent is event.dropped's params.
type DroppedEvent struct {
	Reason string `json:"reason"`
	// Delivered events before the drop.
	Delivered int64 `json:"delivered"`
}

// SubscribeRequest is events.subscribe's params.
type SubscribeRequest struct {
	// Topics among run, plan, power and model; empty means all.
	Topics []string `json:"topics,omitempty"`
}

// SubscribeResult ends a subscription (when the subscriber is dropped or
// the daemon stops; a client that disconnects gets nothing).
type SubscribeResult struct {
	Reason    string `json:"reason"`
	Delivered int64  `json:"delivered"`
}

// BenchWorkload is what each plan runs.
type BenchWorkload struct {
	// Prompts to run; empty means the built-in set.
	Prompts []string `json:"prompts,omitempty"`
	// Built-in prompt set when prompts is empty: "stories" (default,
	// 4 short story openings) or "short" (1 prompt).
	Builtin string `json:"builtin,omitempty"`
	// Tokens per run (default 32).
	MaxTokens int `json:"max_tokens,omitempty"`
	// Repetitions of the whole prompt set per plan (default 3).
	Repetitions int `json:"repetitions,omitempty"`
	// Concurrent streams per round (default 1): with more, a batching plan
	// batches them.
	Concurrency int `json:"concurrency,omitempty"`
}

// BenchBudget bounds a benchmark; zero fields mean no bound.
type BenchBudget struct {
	MaxSeconds float64 `json:"max_seconds,omitempty"`
	// Needs an energy meter.
	MaxJoules float64 `json:"max_joules,omitempty"`
}

// BenchRequest is bench.run's params.
type BenchRequest struct {
	// A loaded model id, or a path (loading it needs admin rights).
	Model string `json:"model"`
	// Plans to compare: names ("name" or "name@version") or inline
	// objects; 1 to 8.
	Plans    []json.RawMessage `json:"plans"`
	Workload BenchWorkload     `json:"workload"`
	Budget   BenchBudget       `json:"budget"`
}

// BenchPlanResult is one plan's figures.
type BenchPlanResult struct {
	Plan PlanUse `json:"plan"`
	// Label: "name@version" or "inline#i".
	Label string `json:"label"`
	// Main resolved settings, for reading results at a glance.
	Threads      int    `json:"threads"`
	Quantization string `json:"quantization"`
	Mode         string `json:"mode"`
	MaxBatch     int    `json:"max_batch"`
	Runs         int    `json:"runs"` // completed runs (a run cut by the budget is not counted)
	// Per-run decode tokens/s, time to first token and p95 inter-token
	// latency.
	TokensPerSecond Spread  `json:"tokens_per_second"`
	TTFTMS          Spread  `json:"ttft_ms"`
	LatencyP95MS    float64 `json:"latency_p95_ms"` // p95 over every inter-token latency of the plan's runs
	// Generated tokens over wall time of the plan's rounds (all streams).
	AggregateTokensPerSecond float64 `json:"aggregate_tokens_per_second"`
	// Energy over the plan's rounds; nil when EnergySource is
	// "unavailable".
	Joules          *float64 `json:"joules"`
	TokensPerJoule  *float64 `json:"tokens_per_joule"`
	EnergySource    string   `json:"energy_source"`
	Identical       bool     `json:"identical_to_first"` // same tokens as the first plan for every prompt and repetition
	RatioToFirst    float64  `json:"ratio_to_first"`     // median tokens/s over the first plan's
	GeneratedTokens int64    `json:"generated_tokens"`
}

// BenchResult is bench.run's result.
type BenchResult struct {
	BenchID string            `json:"bench_id"`
	ModelID string            `json:"model_id"`
	Plans   []BenchPlanResult `json:"plans"`
	// OutputsIdentical: every plan produced the same tokens for every
	// prompt and repetition that all of them completed.
	OutputsIdentical bool `json:"outputs_identical"`
	// Completed: every planned run finished within the budget.
	Completed bool `json:"completed"`
	// StoppedBy: "" (completed), "max_seconds", "max_joules" or
	// "cancelled".
	StoppedBy    string        `json:"stopped_by,omitempty"`
	ElapsedS     float64       `json:"elapsed_s"`
	Joules       *float64      `json:"joules"`
	Runs         int           `json:"runs"`
	PlannedRuns  int           `json:"planned_runs"`
	EnergySource string        `json:"energy_source"`
	Workload     BenchWorkload `json:"workload"`
}

// BenchProgress is the bench.progress notification's params.
type BenchProgress struct {
	BenchID  string  `json:"bench_id"`
	Done     int     `json:"done"`
	Total    int     `json:"total"`
	Plan     string  `json:"plan"`
	ElapsedS float64 `json:"elapsed_s"`
	// Decode tokens/s of the round just finished.
	TokensPerSecond float64 `json:"tokens_per_second"`
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
