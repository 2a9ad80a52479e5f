package rpc

import (
	"context"
	"encoding/json"
	"reflect"
	"sync"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/engine/plan"
)

// Plan, run, scheduler, event and bench methods (issues 4 and 7).
const (
	MethodPlanSchema   = "plan.schema"
	MethodPlanValidate = "plan.validate"
	MethodPlanResolve  = "plan.resolve"
	MethodPlanPut      = "plan.put"
	MethodPlanGet      = "plan.get"
	MethodPlanList     = "plan.list"
	MethodPlanDelete   = "plan.delete"
	MethodPlanPropose  = "plan.propose"
	MethodPlanPromote  = "plan.promote"
	MethodPlanRollback = "plan.rollback"
	MethodPlanHistory  = "plan.history"

	MethodRunGet    = "run.get"
	MethodRunList   = "run.list"
	MethodRunCancel = "run.cancel"

	MethodSchedStats      = "sched.stats"
	MethodEventsSubscribe = "events.subscribe"
	MethodBenchRun        = "bench.run"

	// NotificationBenchProgress is sent during bench.run after each round.
	NotificationBenchProgress = "bench.progress"
)

// PlanEngine is implemented by engines with plans, run records, schedulers,
// events and benchmarks (*engine.Engine). These methods answer -32040 (not
// implemented) for engines without it.
type PlanEngine interface {
	PlanSchema() json.RawMessage
	ValidatePlan(ctx context.Context, req engine.PlanValidateRequest) (*engine.PlanValidateResult, error)
	ResolvePlan(ctx context.Context, req engine.PlanResolveRequest) (*plan.Resolved, error)
	PutPlan(ctx context.Context, req engine.PlanPutRequest) (*engine.PlanChangeResult, error)
	ProposePlan(ctx context.Context, req engine.PlanProposeRequest) (*engine.PlanChangeResult, error)
	PromotePlan(ctx context.Context, req engine.PlanPromoteRequest) (*engine.PlanChangeResult, error)
	RollbackPlan(ctx context.Context, req engine.PlanNameRequest) (*engine.PlanChangeResult, error)
	DeletePlan(ctx context.Context, req engine.PlanNameRequest) (*engine.PlanChangeResult, error)
	GetPlan(ctx context.Context, req engine.PlanGetRequest) (*engine.PlanGetResult, error)
	ListPlans(ctx context.Context) (*engine.PlanListResult, error)
	PlanHistory(ctx context.Context, req engine.PlanNameRequest) (*engine.PlanHistoryResult, error)

	GetRun(ctx context.Context, req engine.RunIDRequest) (*engine.RunRecord, error)
	ListRuns(ctx context.Context, req engine.RunListRequest) (*engine.RunListResult, error)
	CancelRun(ctx context.Context, req engine.RunIDRequest) (*engine.RunCancelResult, error)

	SchedStats() engine.SchedStats
	Subscribe(topics []string, buffer int) (*engine.Subscription, error)
	Bench(ctx context.Context, req engine.BenchRequest, progress func(engine.BenchProgress)) (*engine.BenchResult, error)
}

func planEngine(s *Service) (PlanEngine, error) {
	pe, ok := s.eng.(PlanEngine)
	if !ok {
		return nil, Errorf(engine.CodeNotImplemented, "this engine has no plans, run records or schedulers")
	}
	return pe, nil
}

// PlanNameParams is the params of plan.delete and plan.rollback.
type PlanNameParams struct {
	Name      string `json:"name"`
	Rationale string `json:"rationale,omitempty"`
}

// PlanHistoryParams is plan.history's params.
type PlanHistoryParams struct {
	Name  string `json:"name"`
	Limit int    `json:"limit,omitempty"`
}

// streams tracks the long-lived calls of a Service (events.subscribe) so
// that Drain can end them: a graceful stop must not wait for subscribers.
type streams struct {
	mu      sync.Mutex
	drained bool
	active  map[chan struct{}]struct{}
}

// open registers a stream; its channel is closed by Drain.
func (st *streams) open() (chan struct{}, func()) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := make(chan struct{})
	if st.drained {
		close(c)
		return c, func() {}
	}
	if st.active == nil {
		st.active = map[chan struct{}]struct{}{}
	}
	st.active[c] = struct{}{}
	return c, func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		if _, ok := st.active[c]; ok {
			delete(st.active, c)
		}
	}
}

// Drain ends the long-lived calls in progress (event subscriptions reply
// with reason "daemon stopping") and refuses new ones: the daemon calls it
// when it starts a graceful stop.
func (s *Service) Drain() {
	st := &s.streams
	st.mu.Lock()
	defer st.mu.Unlock()
	st.drained = true
	for c := range st.active {
		close(c)
		delete(st.active, c)
	}
}

var eventNotifications = []Notification{
	{Name: engine.EventRunStarted, Summary: "A run started computing (topic run).", Params: reflect.TypeFor[engine.RunEvent]()},
	{Name: engine.EventRunFinished, Summary: "A run finished, with its metrics (topic run).", Params: reflect.TypeFor[engine.RunEvent]()},
	{Name: engine.EventPlanChanged, Summary: "A plan's active version changed (put, promote, rollback, delete), with the diff and the actor (topic plan).", Params: reflect.TypeFor[engine.AuditEntry]()},
	{Name: engine.EventPlanProposed, Summary: "A candidate plan version was proposed (topic plan).", Params: reflect.TypeFor[engine.AuditEntry]()},
	{Name: engine.EventPlanRejected, Summary: "A plan document was rejected, with its errors by JSON pointer (topic plan).", Params: reflect.TypeFor[engine.AuditEntry]()},
	{Name: engine.EventModelLoaded, Summary: "A model was loaded (topic model).", Params: reflect.TypeFor[engine.ModelEvent]()},
	{Name: engine.EventModelUnloaded, Summary: "A model was unloaded (topic model).", Params: reflect.TypeFor[engine.ModelEvent]()},
	{Name: engine.EventModelLoading, Summary: "Load-time quantization progress of a model (topic model).", Params: reflect.TypeFor[engine.ModelLoadingEvent]()},
	{Name: engine.EventPowerSample, Summary: "A power sample of the energy meter (topic power).", Params: reflect.TypeFor[engine.PowerSampleEvent]()},
	{Name: engine.EventDropped, Summary: "The last notification of a subscriber dropped for not keeping up.", Params: reflect.TypeFor[engine.DroppedEvent]()},
}

func requireName(name string) error {
	if name == "" {
		return InvalidParams(`field "name": must not be empty`)
	}
	return nil
}

// planMethods are the plan, run, scheduler, event and bench entries of the
// method table.
func planMethods() []*Method {
	schema := method(MethodPlanSchema, "Get the Execution Plan's JSON Schema.",
		"The JSON Schema (draft 2020-12) every plan document is validated against, generated from the Go types.",
		nil,
		func(ctx context.Context, s *Service, _ *NoParams, _ Notifier) (json.RawMessage, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.PlanSchema(), nil
		})

	validate := method(MethodPlanValidate, "Validate a plan (and resolve it for a model).",
		"Checks a plan document against the schema, the engine's rules and this host. An invalid plan is error "+
			"-32020 whose data.errors lists every problem as {pointer, message} (JSON pointers, sorted). With model "+
			"(a loaded model id, or a path: admin only), the result also holds the resolved plan.",
		nil,
		func(ctx context.Context, s *Service, p *engine.PlanValidateRequest, _ Notifier) (*engine.PlanValidateResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.ValidatePlan(ctx, *p)
		})
	validate.Examples = []Example{example("threads", map[string]any{
		"plan": map[string]any{"threads": 2, "limits": map[string]any{"max_context": 512}},
	}, map[string]any{"valid": true, "plan": map[string]any{"threads": 2, "limits": map[string]any{"max_context": 512}}})}

	resolve := method(MethodPlanResolve, "Resolve a plan for a model.",
		"Fills every default, writes each tensor's quantization decision (and fallback), names the kernel set and "+
			"returns the canonical hash. plan is an inline object, or a stored plan's name (its active version) or "+
			"\"name@version\"; model is a loaded model id or a path (nothing is loaded; reading a file that is "+
			"not loaded needs admin rights).",
		func(p *engine.PlanResolveRequest) error {
			if p.Model == "" {
				return InvalidParams(`field "model": must not be empty`)
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *engine.PlanResolveRequest, _ Notifier) (*plan.Resolved, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.ResolvePlan(ctx, *p)
		})

	put := method(MethodPlanPut, "Store a new version of a plan and make it active.",
		"Validates the document and stores it atomically as the plan's next version, then activates it. A rejected "+
			"document (-32020, errors by JSON pointer) leaves the stored plans unchanged; the audit log records the "+
			"rejection. Runs already queued or running keep their plan.",
		func(p *engine.PlanPutRequest) error { return requireName(p.Name) },
		func(ctx context.Context, s *Service, p *engine.PlanPutRequest, _ Notifier) (*engine.PlanChangeResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.PutPlan(ctx, *p)
		})
	put.Mutating = true

	get := method(MethodPlanGet, "Get a stored plan.",
		"A version of a plan as stored (default: the active version), with its status (active, inactive or candidate).",
		func(p *engine.PlanGetRequest) error {
			if p.Version < 0 {
				return InvalidParams(`field "version": must be >= 1`)
			}
			return requireName(p.Name)
		},
		func(ctx context.Context, s *Service, p *engine.PlanGetRequest, _ Notifier) (*engine.PlanGetResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.GetPlan(ctx, *p)
		})

	list := method(MethodPlanList, "List the stored plans.", "Every plan with its active and latest versions.",
		nil,
		func(ctx context.Context, s *Service, _ *NoParams, _ Notifier) (*engine.PlanListResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.ListPlans(ctx)
		})

	del := method(MethodPlanDelete, "Delete a plan.", "Removes every version of a plan (the default plan cannot be deleted).",
		func(p *PlanNameParams) error { return requireName(p.Name) },
		func(ctx context.Context, s *Service, p *PlanNameParams, _ Notifier) (*engine.PlanChangeResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.DeletePlan(ctx, engine.PlanNameRequest{Name: p.Name, Rationale: p.Rationale})
		})
	del.Mutating = true

	propose := method(MethodPlanPropose, "Propose a candidate plan version.",
		"Any peer may propose: the document is validated and stored as a new, inactive version with the rationale "+
			"and evidence in the audit log; plan.promote (admin) makes it active. A proposal that fails validation is "+
			"rejected (-32020, errors by JSON pointer) and changes nothing but an audit entry of the rejection.",
		func(p *engine.PlanProposeRequest) error { return requireName(p.Name) },
		func(ctx context.Context, s *Service, p *engine.PlanProposeRequest, _ Notifier) (*engine.PlanChangeResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.ProposePlan(ctx, *p)
		})

	promote := method(MethodPlanPromote, "Make a stored plan version active.",
		"Atomically activates a version (e.g. a proposal). Requests already queued or running keep the plan they "+
			"started with; the change is in the audit log and sent as event.plan.changed.",
		func(p *engine.PlanPromoteRequest) error {
			if p.Version < 1 {
				return InvalidParams(`field "version": must be >= 1`)
			}
			return requireName(p.Name)
		},
		func(ctx context.Context, s *Service, p *engine.PlanPromoteRequest, _ Notifier) (*engine.PlanChangeResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.PromotePlan(ctx, *p)
		})
	promote.Mutating = true

	rollback := method(MethodPlanRollback, "Re-activate the previous version of a plan.",
		"Makes the version that was active before the current one active again.",
		func(p *PlanNameParams) error { return requireName(p.Name) },
		func(ctx context.Context, s *Service, p *PlanNameParams, _ Notifier) (*engine.PlanChangeResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.RollbackPlan(ctx, engine.PlanNameRequest{Name: p.Name, Rationale: p.Rationale})
		})
	rollback.Mutating = true

	history := method(MethodPlanHistory, "Get a plan's audit log.",
		"Every change of the plan, oldest first: who (peer uid, gid, pid, executable), when, what (a diff by JSON "+
			"pointer), why (rationale) and the evidence; rejected proposals too.",
		func(p *PlanHistoryParams) error {
			if p.Limit < 0 {
				return InvalidParams(`field "limit": must be >= 0`)
			}
			return requireName(p.Name)
		},
		func(ctx context.Context, s *Service, p *PlanHistoryParams, _ Notifier) (*engine.PlanHistoryResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.PlanHistory(ctx, engine.PlanNameRequest{Name: p.Name, Limit: p.Limit})
		})

	runGet := method(MethodRunGet, "Get a run's record.",
		"The request, the resolved plan and its hash, the tokens, metrics and finish reason of a run, live (queued "+
			"or running) or finished.",
		func(p *engine.RunIDRequest) error {
			if p.RunID == "" {
				return InvalidParams(`field "run_id": must not be empty`)
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *engine.RunIDRequest, _ Notifier) (*engine.RunRecord, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.GetRun(ctx, *p)
		})

	runList := method(MethodRunList, "List runs.", "Runs in progress, then recorded runs, newest first.",
		func(p *engine.RunListRequest) error {
			if p.Limit < 0 {
				return InvalidParams(`field "limit": must be >= 0`)
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *engine.RunListRequest, _ Notifier) (*engine.RunListResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.ListRuns(ctx, *p)
		})

	runCancel := method(MethodRunCancel, "Cancel a run.",
		"A queued or running run stops at its next step and frees its KV cache; its generate call replies with "+
			"finish_reason cancelled. The peer that started the run (same uid) or an admin may cancel it.",
		func(p *engine.RunIDRequest) error {
			if p.RunID == "" {
				return InvalidParams(`field "run_id": must not be empty`)
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *engine.RunIDRequest, _ Notifier) (*engine.RunCancelResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			return pe.CancelRun(ctx, *p)
		})

	stats := method(MethodSchedStats, "Get the schedulers' counters.",
		"Per scheduler (a model under one set of threads and scheduler settings): queued and active sequences, "+
			"decode steps by batch size, rejections; and the sequences holding a KV cache and its bytes.",
		nil,
		func(ctx context.Context, s *Service, _ *NoParams, _ Notifier) (engine.SchedStats, error) {
			pe, err := planEngine(s)
			if err != nil {
				return engine.SchedStats{}, err
			}
			return pe.SchedStats(), nil
		})

	subscribe := method(MethodEventsSubscribe, "Stream the engine's events.",
		"Sends a notification per event of the topics (run, plan, power, model; default all) until the connection "+
			"closes. The call only replies when the subscription ends otherwise: a subscriber that does not keep up "+
			"is dropped (an event.dropped notification, then the reply), and a daemon that stops replies "+
			"\"daemon stopping\". The engine never waits for a subscriber.",
		func(p *engine.SubscribeRequest) error {
			for _, t := range p.Topics {
				switch t {
				case engine.TopicRun, engine.TopicPlan, engine.TopicPower, engine.TopicModel:
				default:
					return InvalidParams(`field "topics": unknown topic %q (run, plan, power, model)`, t)
				}
			}
			return nil
		},
		subscribe)
	subscribe.Notifications = eventNotifications

	bench := method(MethodBenchRun, "Benchmark plans against each other.",
		"Runs the workload under each plan, interleaved (A B A B …), and returns per plan the median and p5/p95 of "+
			"decode tokens/s and TTFT, the p95 inter-token latency, joules and tokens per joule with the energy "+
			"source, whether its outputs equal the first plan's, and the ratio to the first plan. The budget "+
			"(max_seconds, max_joules) stops it; a bench.progress notification follows each round. A model that "+
			"is not loaded needs admin rights (it would be loaded).",
		func(p *engine.BenchRequest) error {
			if p.Model == "" {
				return InvalidParams(`field "model": must not be empty`)
			}
			if len(p.Plans) == 0 {
				return InvalidParams(`field "plans": give at least one plan`)
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *engine.BenchRequest, n Notifier) (*engine.BenchResult, error) {
			pe, err := planEngine(s)
			if err != nil {
				return nil, err
			}
			var progress func(engine.BenchProgress)
			if n != nil {
				progress = func(bp engine.BenchProgress) { n.Notify(NotificationBenchProgress, bp) }
			}
			return pe.Bench(ctx, *p, progress)
		})
	bench.Notifications = []Notification{{Name: NotificationBenchProgress, Summary: "Progress after each round of the benchmark.", Params: reflect.TypeFor[engine.BenchProgress]()}}

	return []*Method{schema, validate, resolve, put, get, list, del, propose, promote, rollback, history,
		runGet, runList, runCancel, stats, subscribe, bench}
}

// subscribe is events.subscribe.
func subscribe(ctx context.Context, s *Service, p *engine.SubscribeRequest, n Notifier) (engine.SubscribeResult, error) {
	pe, err := planEngine(s)
	if err != nil {
		return engine.SubscribeResult{}, err
	}
	if n == nil {
		return engine.SubscribeResult{}, Errorf(engine.CodeNotImplemented, "events.subscribe needs a transport that sends notifications")
	}
	sub, err := pe.Subscribe(p.Topics, 0)
	if err != nil {
		return engine.SubscribeResult{}, err
	}
	defer sub.Close()
	drained, done := s.streams.open()
	defer done()
	bn, _ := n.(BacklogNotifier)
	var delivered int64
	drop := func(reason string) engine.SubscribeResult {
		sub.Close()
		n.Notify(engine.EventDropped, engine.DroppedEvent{Reason: reason, Delivered: delivered})
		return engine.SubscribeResult{Reason: "dropped: " + reason, Delivered: delivered}
	}
	for {
		select {
		case <-ctx.Done():
			return engine.SubscribeResult{Reason: "connection closed", Delivered: delivered}, nil
		case <-drained:
			return engine.SubscribeResult{Reason: "daemon stopping", Delivered: delivered}, nil
		case ev, ok := <-sub.C:
			if !ok {
				return drop(sub.Reason()), nil
			}
			if bn != nil {
				if q, lim := bn.Backlog(); lim > 0 && q >= max(1, lim/2) {
					return drop("too slow: " + itoa(q) + " notifications were waiting to be written"), nil
				}
			}
			n.Notify(ev.Method, ev.Params)
			delivered++
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
