package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"

	"github.com/weos/llm-engine/engine/plan"
)

// Plans in the engine. The versions live in engine/plan's Store
// (<StateDir>/plans/NAME/N.json). On top of it the engine keeps, per name,
// the ACTIVE version (what "name" means in generate, model.load and
// bench.run) and the versions active before it (for rollback), in
// <StateDir>/plan-active.json (written atomically), and an append-only
// audit log of every change and rejected proposal in
// <StateDir>/plan-audit.jsonl (fsynced).
//
//   - plan.put stores a version and activates it (admin);
//   - plan.propose stores a candidate, not active (any peer);
//   - plan.promote activates a stored version (admin);
//   - plan.rollback re-activates the version active before the current one
//     (admin);
//   - plan.delete removes every version (admin; not "default").
//
// A run resolves its plan once, when it is submitted: promoting or rolling
// back never changes the plan of a request already queued or running.

// PlanErrorData is the data member of a -32020 "plan invalid" error.
type PlanErrorData struct {
	Errors []plan.FieldError `json:"errors"`
}

func planInvalid(msg string, es []plan.FieldError) *Error {
	s := make([]string, 0, len(es))
	for _, fe := range es {
		s = append(s, fe.String())
	}
	if msg == "" {
		msg = "plan invalid"
	}
	return &Error{Code: CodePlanInvalid, Msg: msg + ": " + strings.Join(s, "; "), Data: PlanErrorData{Errors: es}}
}

type activeEntry struct {
	Active int `json:"active"`
	// History holds the versions active before, oldest first: rollback
	// re-activates the last one and drops it.
	History []int `json:"history,omitempty"`
	// EverActive lists every version that was active at some time.
	EverActive []int `json:"ever_active,omitempty"`
}

type planMgr struct {
	store      *plan.Store
	activePath string
	audit      *auditLog

	mu     sync.Mutex // serialises changes: active map, file, audit
	active map[string]*activeEntry
}

func openPlans(stateDir string) (*planMgr, error) {
	st, err := plan.OpenStore(filepath.Join(stateDir, "plans"))
	if err != nil {
		return nil, err
	}
	pm := &planMgr{store: st, activePath: filepath.Join(stateDir, "plan-active.json"), active: map[string]*activeEntry{}}
	raw, err := os.ReadFile(pm.activePath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("plans: %w", err)
	default:
		if err := json.Unmarshal(raw, &pm.active); err != nil {
			return nil, fmt.Errorf("plans: %s: %w", pm.activePath, err)
		}
	}
	if pm.audit, err = openAudit(filepath.Join(stateDir, "plan-audit.jsonl")); err != nil {
		return nil, err
	}
	return pm, nil
}

func (pm *planMgr) close() error { return pm.audit.close() }

// activeLocked is the active version of name (0: none). A name the engine
// has no entry for (stored before, or the default plan as created) is
// active at its latest version.
func (pm *planMgr) activeLocked(name string) (int, error) {
	if a, ok := pm.active[name]; ok {
		return a.Active, nil
	}
	infos, err := pm.store.List()
	if err != nil {
		return 0, err
	}
	for _, in := range infos {
		if in.Name == name {
			return in.Latest, nil
		}
	}
	return 0, nil
}

func (pm *planMgr) activeVersion(name string) (int, error) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.activeLocked(name)
}

// setActiveLocked makes v the active version of name (recording the
// previous one, prev, for rollback unless rollingBack) and saves the file.
// prev is the active version read before any new version was stored.
func (pm *planMgr) setActiveLocked(name string, prev, v int, rollingBack bool) error {
	a := pm.active[name]
	if a == nil {
		a = &activeEntry{Active: prev}
		if prev > 0 {
			a.EverActive = []int{prev}
		}
	}
	next := *a
	next.History = slices.Clone(a.History)
	next.EverActive = slices.Clone(a.EverActive)
	if rollingBack {
		next.History = next.History[:len(next.History)-1]
	} else if a.Active > 0 && a.Active != v {
		next.History = append(next.History, a.Active)
	}
	next.Active = v
	if v > 0 && !slices.Contains(next.EverActive, v) {
		next.EverActive = append(next.EverActive, v)
	}
	old := pm.active[name]
	pm.active[name] = &next
	if err := pm.saveLocked(); err != nil {
		if old == nil {
			delete(pm.active, name)
		} else {
			pm.active[name] = old
		}
		return err
	}
	return nil
}

func (pm *planMgr) saveLocked() error {
	b, err := json.MarshalIndent(pm.active, "", "  ")
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(pm.activePath, append(b, '\n'), 0o640, renameio.WithTempDir(filepath.Dir(pm.activePath))); err != nil {
		return fmt.Errorf("plans: %w", err)
	}
	return syncDir(filepath.Dir(pm.activePath))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ParsePlanRef splits "name" or "name@version".
func ParsePlanRef(s string) (name string, version int, err error) {
	name, vs, hasV := strings.Cut(s, "@")
	if hasV {
		version, err = strconv.Atoi(vs)
		if err != nil || version < 1 {
			return "", 0, fmt.Errorf("plan reference %q: the version after @ must be a positive integer", s)
		}
	}
	if !plan.ValidName(name) {
		return "", 0, fmt.Errorf("plan reference %q: a plan name must match %s", s, plan.NamePattern)
	}
	return name, version, nil
}

// planChoice is a plan picked for a request: a stored version, or inline.
type planChoice struct {
	use PlanUse // Hash is set once resolved
	p   *plan.Plan
}

// choosePlan interprets a request's "plan": absent → the active version of
// "default"; a string → a stored plan ("name" = its active version, or
// "name@version"); an object → an inline plan, validated.
func (e *Engine) choosePlan(ref any) (*planChoice, error) {
	switch r := ref.(type) {
	case nil:
		return e.storedPlan(plan.DefaultName, 0)
	case string:
		name, v, err := ParsePlanRef(r)
		if err != nil {
			return nil, errorf(CodeInvalidParams, "invalid params: field \"plan\": %v", err)
		}
		return e.storedPlan(name, v)
	case json.RawMessage:
		t := bytes.TrimSpace(r)
		if len(t) == 0 || string(t) == "null" {
			return e.choosePlan(nil)
		}
		if t[0] == '"' {
			var s string
			if err := json.Unmarshal(t, &s); err != nil {
				return nil, errorf(CodeInvalidParams, "invalid params: field \"plan\": %v", err)
			}
			return e.choosePlan(s)
		}
		p, es, err := e.validateDoc(t)
		if err != nil {
			return nil, err
		}
		if len(es) > 0 {
			return nil, planInvalid("inline plan invalid", es)
		}
		return &planChoice{p: p}, nil
	case *plan.Plan:
		if es := r.Check(plan.Env{}); len(es) > 0 {
			return nil, planInvalid("inline plan invalid", es)
		}
		return &planChoice{p: r}, nil
	default:
		raw, err := json.Marshal(r)
		if err != nil {
			return nil, errorf(CodeInvalidParams, "invalid params: field \"plan\": %v", err)
		}
		return e.choosePlan(json.RawMessage(raw))
	}
}

// storedPlan loads a stored plan; version 0 means the active one.
func (e *Engine) storedPlan(name string, version int) (*planChoice, error) {
	if version == 0 {
		v, err := e.plans.activeVersion(name)
		if err != nil {
			return nil, errorf(CodeInternal, "%v", err)
		}
		if v == 0 {
			if _, err := e.plans.store.Get(name, 0); err == nil {
				return nil, errorf(CodePlanNotFound, "plan %q has no active version (only proposals): promote one with plan.promote", name)
			}
			return nil, errorf(CodePlanNotFound, "plan %q not found", name)
		}
		version = v
	}
	ent, err := e.plans.store.Get(name, version)
	if err != nil {
		if errors.Is(err, plan.ErrNotFound) {
			return nil, errorf(CodePlanNotFound, "plan %s@%d not found", name, version)
		}
		return nil, errorf(CodePlanInvalid, "plan %s@%d: %v", name, version, err)
	}
	return &planChoice{use: PlanUse{Name: name, Version: version}, p: ent.Plan}, nil
}

// validateDoc is plan.Validate plus the engine's own rules (what the
// scheduler cannot honour), all by JSON pointer.
func (e *Engine) validateDoc(raw []byte) (*plan.Plan, []plan.FieldError, error) {
	p, es, err := plan.Validate(raw)
	if err != nil {
		return nil, nil, errorf(CodeInternal, "plan validation: %v", err)
	}
	if len(es) > 0 {
		return nil, es, nil
	}
	if es := engineRules(p); len(es) > 0 {
		return nil, es, nil
	}
	return p, nil, nil
}

// engineRules are the engine's checks on top of engine/plan's: a field the
// engine could not honour is refused, never ignored.
func engineRules(p *plan.Plan) []plan.FieldError {
	var es []plan.FieldError
	if s := p.Scheduler; s != nil && s.MaxWaitMS != nil && *s.MaxWaitMS > 0 {
		mode, policy := plan.ModeSimple, plan.PolicyLatency
		if s.Mode != nil {
			mode = *s.Mode
		}
		if s.Policy != nil {
			policy = *s.Policy
		}
		switch {
		case mode == plan.ModeSimple:
			es = append(es, plan.FieldError{Pointer: "/scheduler/max_wait_ms", Message: "max_wait_ms waits for a batch to fill: it needs scheduler.mode batching (simple mode runs one request at a time)"})
		case policy == plan.PolicyLatency:
			es = append(es, plan.FieldError{Pointer: "/scheduler/max_wait_ms", Message: "the latency policy never waits for a batch to fill: max_wait_ms applies to the cost and energy policies"})
		}
	}
	return es
}

// checkHost runs the plan's host checks (threads, backend, power cap).
func (e *Engine) checkHost(p *plan.Plan) []plan.FieldError {
	es := p.Check(e.planEnv())
	return append(es, engineRules(p)...)
}

// ---- RPC facade ----

// PlanSchema answers plan.schema: the plan's JSON Schema (draft 2020-12).
func (e *Engine) PlanSchema() json.RawMessage { return json.RawMessage(plan.Schema()) }

// ValidatePlan answers plan.validate: schema, engine and host checks, and
// the resolved plan when a model is given. An invalid plan is a -32020
// error listing every problem by JSON pointer (error data).
func (e *Engine) ValidatePlan(ctx context.Context, req PlanValidateRequest) (*PlanValidateResult, error) {
	p, es, err := e.validateDoc(req.Plan)
	if err != nil {
		return nil, err
	}
	if len(es) == 0 {
		es = e.checkHost(p)
	}
	if len(es) > 0 {
		return nil, planInvalid("plan invalid", es)
	}
	out := &PlanValidateResult{Valid: true, Plan: p}
	if req.Model != "" {
		r, err := e.resolveFor(ctx, req.Model, p)
		if err != nil {
			return nil, err
		}
		out.Resolved = r
	}
	return out, nil
}

// ResolvePlan answers plan.resolve: every default and per-tensor decision
// of the plan (inline, "name" or "name@version") for a model, with the
// kernel set and the hash.
func (e *Engine) ResolvePlan(ctx context.Context, req PlanResolveRequest) (*plan.Resolved, error) {
	if req.Model == "" {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"model\" is required")
	}
	ch, err := e.choosePlan(json.RawMessage(req.Plan))
	if err != nil {
		return nil, err
	}
	return e.resolveFor(ctx, req.Model, ch.p)
}

func needAdmin(ctx context.Context, what string) error {
	if isAdmin(ctx) {
		return nil
	}
	a := actorOf(ctx)
	return &Error{Code: CodeUnauthorized, Msg: fmt.Sprintf("unauthorized: %s needs an admin peer (uid 0, the daemon's user or the admin group); %s is not", what, a)}
}

// PutPlan answers plan.put: validate, store as the next version and make
// it active. A rejected document changes nothing but an audit entry.
func (e *Engine) PutPlan(ctx context.Context, req PlanPutRequest) (*PlanChangeResult, error) {
	if err := needAdmin(ctx, "plan.put"); err != nil {
		return nil, err
	}
	return e.storeVersion(ctx, req.Name, req.Plan, req.Rationale, nil, true)
}

// ProposePlan answers plan.propose: validate and store a candidate version
// (not active). Any peer may propose. A proposal that fails validation is
// rejected with its errors by JSON pointer and changes nothing but an audit
// entry of the rejection.
func (e *Engine) ProposePlan(ctx context.Context, req PlanProposeRequest) (*PlanChangeResult, error) {
	return e.storeVersion(ctx, req.Name, req.Plan, req.Rationale, req.Evidence, false)
}

func (e *Engine) storeVersion(ctx context.Context, name string, raw json.RawMessage, why string, evidence json.RawMessage, activate bool) (*PlanChangeResult, error) {
	if !plan.ValidName(name) {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"name\": %q must match %s", name, plan.NamePattern)
	}
	action := AuditPropose
	if activate {
		action = AuditPut
	}
	actor := actorOf(ctx)
	pm := e.plans
	pm.mu.Lock()
	defer pm.mu.Unlock()
	prev, err := pm.activeLocked(name)
	if err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	p, es, err := e.validateDoc(raw)
	if err != nil {
		return nil, err
	}
	if len(es) > 0 {
		ent := &AuditEntry{Time: time.Now().UTC(), Action: AuditReject, Name: name, Active: prev, PreviousActive: prev,
			Actor: actor, Rationale: why, Evidence: evidence, Errors: es}
		if aerr := pm.audit.append(ent); aerr != nil {
			return nil, errorf(CodeInternal, "%v", aerr)
		}
		e.publish(TopicPlan, EventPlanRejected, *ent)
		return nil, planInvalid(fmt.Sprintf("plan %s rejected (%s)", name, action), es)
	}
	v, fes, err := pm.store.Put(name, raw)
	if err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	if len(fes) > 0 { // Validate passed above; cannot happen
		return nil, planInvalid("plan invalid", fes)
	}
	var prevPlan *plan.Plan
	if prev > 0 {
		if pe, err := pm.store.Get(name, prev); err == nil {
			prevPlan = pe.Plan
		}
	}
	active := prev
	if activate {
		if err := pm.setActiveLocked(name, prev, v, false); err != nil {
			return nil, errorf(CodeInternal, "version %d stored but not activated: %v", v, err)
		}
		active = v
	} else if _, ok := pm.active[name]; !ok && prev == 0 {
		// A new name that starts with a proposal: record that nothing is
		// active (otherwise "latest" would count as active).
		pm.active[name] = &activeEntry{}
		if err := pm.saveLocked(); err != nil {
			return nil, errorf(CodeInternal, "%v", err)
		}
	}
	changes := planDiff(prevPlan, p)
	ent := &AuditEntry{Time: time.Now().UTC(), Action: action, Name: name, Version: v, PreviousActive: prev, Active: active,
		Actor: actor, Changes: changes, Rationale: why, Evidence: evidence}
	if err := pm.audit.append(ent); err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	if activate {
		e.publish(TopicPlan, EventPlanChanged, *ent)
	} else {
		e.publish(TopicPlan, EventPlanProposed, *ent)
	}
	return &PlanChangeResult{Name: name, Version: v, Active: active, PreviousActive: prev, Changes: nonNilChanges(changes), AuditSeq: ent.Seq}, nil
}

// planDiff is plan.Diff with "version" absent read as 1 (its meaning), so
// that {"version": 1} → {} is no change.
func planDiff(a, b *plan.Plan) []plan.Change {
	norm := func(p *plan.Plan) *plan.Plan {
		if p == nil {
			p = &plan.Plan{}
		}
		p = p.Clone()
		if p.Version == nil {
			p.Version = plan.Ptr(plan.FormatVersion)
		}
		return p
	}
	return plan.Diff(norm(a), norm(b))
}

func nonNilChanges(c []plan.Change) []plan.Change {
	if c == nil {
		return []plan.Change{}
	}
	return c
}

// PromotePlan answers plan.promote: make a stored version active,
// atomically. Runs already queued or running keep their plan.
func (e *Engine) PromotePlan(ctx context.Context, req PlanPromoteRequest) (*PlanChangeResult, error) {
	if err := needAdmin(ctx, "plan.promote"); err != nil {
		return nil, err
	}
	if req.Version < 1 {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"version\" must be ≥ 1")
	}
	return e.activate(ctx, req.Name, req.Version, AuditPromote, req.Rationale)
}

// RollbackPlan answers plan.rollback: re-activate the version that was
// active before the current one.
func (e *Engine) RollbackPlan(ctx context.Context, req PlanNameRequest) (*PlanChangeResult, error) {
	if err := needAdmin(ctx, "plan.rollback"); err != nil {
		return nil, err
	}
	return e.activate(ctx, req.Name, 0, AuditRollback, req.Rationale)
}

func (e *Engine) activate(ctx context.Context, name string, version int, action, why string) (*PlanChangeResult, error) {
	if !plan.ValidName(name) {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"name\": %q must match %s", name, plan.NamePattern)
	}
	pm := e.plans
	pm.mu.Lock()
	defer pm.mu.Unlock()
	prev, err := pm.activeLocked(name)
	if err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	rollingBack := action == AuditRollback
	if rollingBack {
		a := pm.active[name]
		if a == nil || len(a.History) == 0 {
			if _, err := pm.store.Get(name, 0); errors.Is(err, plan.ErrNotFound) {
				return nil, errorf(CodePlanNotFound, "plan %q not found", name)
			}
			return nil, errorf(CodeInvalidParams, "plan %q has no earlier active version to roll back to", name)
		}
		version = a.History[len(a.History)-1]
	}
	ent, err := pm.store.Get(name, version)
	if err != nil {
		if errors.Is(err, plan.ErrNotFound) {
			return nil, errorf(CodePlanNotFound, "plan %s@%d not found", name, version)
		}
		return nil, errorf(CodePlanInvalid, "plan %s@%d: %v", name, version, err)
	}
	if es := engineRules(ent.Plan); len(es) > 0 {
		return nil, planInvalid(fmt.Sprintf("plan %s@%d cannot be activated", name, version), es)
	}
	var prevPlan *plan.Plan
	if prev > 0 {
		if pe, err := pm.store.Get(name, prev); err == nil {
			prevPlan = pe.Plan
		}
	}
	if err := pm.setActiveLocked(name, prev, version, rollingBack); err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	changes := planDiff(prevPlan, ent.Plan)
	ae := &AuditEntry{Time: time.Now().UTC(), Action: action, Name: name, Version: version, PreviousActive: prev, Active: version,
		Actor: actorOf(ctx), Changes: changes, Rationale: why}
	if err := pm.audit.append(ae); err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	e.publish(TopicPlan, EventPlanChanged, *ae)
	return &PlanChangeResult{Name: name, Version: version, Active: version, PreviousActive: prev, Changes: nonNilChanges(changes), AuditSeq: ae.Seq}, nil
}

// DeletePlan answers plan.delete: remove every version of a plan (not
// "default").
func (e *Engine) DeletePlan(ctx context.Context, req PlanNameRequest) (*PlanChangeResult, error) {
	if err := needAdmin(ctx, "plan.delete"); err != nil {
		return nil, err
	}
	pm := e.plans
	pm.mu.Lock()
	defer pm.mu.Unlock()
	prev, _ := pm.activeLocked(req.Name)
	if err := pm.store.Delete(req.Name); err != nil {
		switch {
		case errors.Is(err, plan.ErrNotFound):
			return nil, errorf(CodePlanNotFound, "plan %q not found", req.Name)
		case errors.Is(err, plan.ErrDefaultPlan), errors.Is(err, plan.ErrInvalidName):
			return nil, errorf(CodeInvalidParams, "invalid params: %v", err)
		}
		return nil, errorf(CodeInternal, "%v", err)
	}
	if _, ok := pm.active[req.Name]; ok {
		delete(pm.active, req.Name)
		if err := pm.saveLocked(); err != nil {
			return nil, errorf(CodeInternal, "%v", err)
		}
	}
	ae := &AuditEntry{Time: time.Now().UTC(), Action: AuditDelete, Name: req.Name, PreviousActive: prev, Actor: actorOf(ctx), Rationale: req.Rationale}
	if err := pm.audit.append(ae); err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	e.publish(TopicPlan, EventPlanChanged, *ae)
	return &PlanChangeResult{Name: req.Name, PreviousActive: prev, Changes: []plan.Change{}, AuditSeq: ae.Seq}, nil
}

// GetPlan answers plan.get: a version (default: the active one) as stored.
func (e *Engine) GetPlan(ctx context.Context, req PlanGetRequest) (*PlanGetResult, error) {
	if !plan.ValidName(req.Name) {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"name\": %q must match %s", req.Name, plan.NamePattern)
	}
	pm := e.plans
	pm.mu.Lock()
	active, err := pm.activeLocked(req.Name)
	var ever []int
	if a := pm.active[req.Name]; a != nil {
		ever = slices.Clone(a.EverActive)
	}
	pm.mu.Unlock()
	if err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	v := req.Version
	if v == 0 {
		v = active
		if v == 0 {
			ch, err := e.storedPlan(req.Name, 0)
			if err != nil {
				return nil, err
			}
			v = ch.use.Version
		}
	}
	ent, err := pm.store.Get(req.Name, v)
	if err != nil {
		if errors.Is(err, plan.ErrNotFound) {
			return nil, errorf(CodePlanNotFound, "plan %s@%d not found", req.Name, v)
		}
		return nil, errorf(CodePlanInvalid, "%v", err)
	}
	status := "candidate"
	switch {
	case v == active:
		status = "active"
	case slices.Contains(ever, v) || (ever == nil && v < active):
		status = "inactive"
	}
	return &PlanGetResult{Name: req.Name, Version: v, Active: active, Status: status, Created: ent.Created, Plan: json.RawMessage(ent.Raw)}, nil
}

// ListPlans answers plan.list.
func (e *Engine) ListPlans(ctx context.Context) (*PlanListResult, error) {
	infos, err := e.plans.store.List()
	if err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	out := &PlanListResult{Plans: []PlanSummary{}}
	e.plans.mu.Lock()
	defer e.plans.mu.Unlock()
	for _, in := range infos {
		a, _ := e.plans.activeLocked(in.Name)
		out.Plans = append(out.Plans, PlanSummary{Name: in.Name, Active: a, Latest: in.Latest, Versions: in.Versions})
	}
	return out, nil
}

// PlanHistory answers plan.history: the audit entries of a plan, oldest
// first (the last limit ones when limit > 0).
func (e *Engine) PlanHistory(ctx context.Context, req PlanNameRequest) (*PlanHistoryResult, error) {
	if !plan.ValidName(req.Name) {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"name\": %q must match %s", req.Name, plan.NamePattern)
	}
	ents, err := e.plans.audit.entries(req.Name)
	if err != nil {
		return nil, errorf(CodeInternal, "%v", err)
	}
	if req.Limit > 0 && len(ents) > req.Limit {
		ents = ents[len(ents)-req.Limit:]
	}
	return &PlanHistoryResult{Entries: ents}, nil
}
