package client

import (
	"context"
	"encoding/json"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/rpc"
)

// OnNotification sets fn to receive every notification other than
// generate.token (events of events.subscribe, bench.progress), in order,
// from the connection's read loop; fn must not call the client. nil
// removes it.
func (c *Client) OnNotification(fn func(method string, params json.RawMessage)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onNote = fn
}

func (c *Client) note(method string, params *json.RawMessage) {
	c.mu.Lock()
	fn := c.onNote
	c.mu.Unlock()
	if fn == nil {
		return
	}
	var raw json.RawMessage
	if params != nil {
		raw = append(raw, (*params)...)
	}
	fn(method, raw)
}

// Subscribe calls events.subscribe: fn gets every event of the topics
// (empty: all), in order, from the connection's read loop, until the
// subscription ends (the subscriber was dropped, or the daemon stops: the
// result says why) or ctx ends (the connection is then closed, which ends
// the subscription in the daemon, and ctx's error is returned). The
// connection serves nothing else meanwhile: use a client of its own.
func (c *Client) Subscribe(ctx context.Context, topics []string, fn func(method string, params json.RawMessage)) (*engine.SubscribeResult, error) {
	c.OnNotification(fn)
	defer c.OnNotification(nil)
	var out engine.SubscribeResult
	err := c.Call(ctx, rpc.MethodEventsSubscribe, engine.SubscribeRequest{Topics: topics}, &out)
	if err != nil {
		if ctx.Err() != nil {
			c.Close()
		}
		return nil, err
	}
	return &out, nil
}

// Bench calls bench.run; progress (may be nil) gets each bench.progress
// notification.
func (c *Client) Bench(ctx context.Context, req engine.BenchRequest, progress func(engine.BenchProgress)) (*engine.BenchResult, error) {
	if progress != nil {
		c.OnNotification(func(method string, params json.RawMessage) {
			if method != rpc.NotificationBenchProgress {
				return
			}
			var p engine.BenchProgress
			if json.Unmarshal(params, &p) == nil {
				progress(p)
			}
		})
		defer c.OnNotification(nil)
	}
	var out engine.BenchResult
	if err := c.Call(ctx, rpc.MethodBenchRun, req, &out); err != nil {
		if ctx.Err() != nil {
			c.Close()
		}
		return nil, err
	}
	return &out, nil
}

func call[T any](ctx context.Context, c *Client, method string, params any) (*T, error) {
	var out T
	if err := c.Call(ctx, method, params, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PlanSchema calls plan.schema.
func (c *Client) PlanSchema(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.Call(ctx, rpc.MethodPlanSchema, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// ValidatePlan calls plan.validate (model may be ""). An invalid plan is an
// *rpc.Error with code -32020; PlanErrors extracts its problems.
func (c *Client) ValidatePlan(ctx context.Context, doc json.RawMessage, model string) (*engine.PlanValidateResult, error) {
	return call[engine.PlanValidateResult](ctx, c, rpc.MethodPlanValidate, engine.PlanValidateRequest{Plan: doc, Model: model})
}

// ResolvePlan calls plan.resolve; ref is an inline plan object or a JSON
// string naming a stored plan.
func (c *Client) ResolvePlan(ctx context.Context, ref json.RawMessage, model string) (*plan.Resolved, error) {
	return call[plan.Resolved](ctx, c, rpc.MethodPlanResolve, engine.PlanResolveRequest{Plan: ref, Model: model})
}

// PutPlan calls plan.put.
func (c *Client) PutPlan(ctx context.Context, name string, doc json.RawMessage, rationale string) (*engine.PlanChangeResult, error) {
	return call[engine.PlanChangeResult](ctx, c, rpc.MethodPlanPut, engine.PlanPutRequest{Name: name, Plan: doc, Rationale: rationale})
}

// GetPlan calls plan.get (version 0: the active one).
func (c *Client) GetPlan(ctx context.Context, name string, version int) (*engine.PlanGetResult, error) {
	return call[engine.PlanGetResult](ctx, c, rpc.MethodPlanGet, engine.PlanGetRequest{Name: name, Version: version})
}

// ListPlans calls plan.list.
func (c *Client) ListPlans(ctx context.Context) (*engine.PlanListResult, error) {
	return call[engine.PlanListResult](ctx, c, rpc.MethodPlanList, nil)
}

// DeletePlan calls plan.delete.
func (c *Client) DeletePlan(ctx context.Context, name string) (*engine.PlanChangeResult, error) {
	return call[engine.PlanChangeResult](ctx, c, rpc.MethodPlanDelete, rpc.PlanNameParams{Name: name})
}

// ProposePlan calls plan.propose.
func (c *Client) ProposePlan(ctx context.Context, req engine.PlanProposeRequest) (*engine.PlanChangeResult, error) {
	return call[engine.PlanChangeResult](ctx, c, rpc.MethodPlanPropose, req)
}

// PromotePlan calls plan.promote.
func (c *Client) PromotePlan(ctx context.Context, name string, version int, rationale string) (*engine.PlanChangeResult, error) {
	return call[engine.PlanChangeResult](ctx, c, rpc.MethodPlanPromote, engine.PlanPromoteRequest{Name: name, Version: version, Rationale: rationale})
}

// RollbackPlan calls plan.rollback.
func (c *Client) RollbackPlan(ctx context.Context, name, rationale string) (*engine.PlanChangeResult, error) {
	return call[engine.PlanChangeResult](ctx, c, rpc.MethodPlanRollback, rpc.PlanNameParams{Name: name, Rationale: rationale})
}

// PlanHistory calls plan.history (limit 0: all entries).
func (c *Client) PlanHistory(ctx context.Context, name string, limit int) (*engine.PlanHistoryResult, error) {
	return call[engine.PlanHistoryResult](ctx, c, rpc.MethodPlanHistory, rpc.PlanHistoryParams{Name: name, Limit: limit})
}

// GetRun calls run.get.
func (c *Client) GetRun(ctx context.Context, runID string) (*engine.RunRecord, error) {
	return call[engine.RunRecord](ctx, c, rpc.MethodRunGet, engine.RunIDRequest{RunID: runID})
}

// ListRuns calls run.list.
func (c *Client) ListRuns(ctx context.Context, req engine.RunListRequest) (*engine.RunListResult, error) {
	return call[engine.RunListResult](ctx, c, rpc.MethodRunList, req)
}

// CancelRun calls run.cancel.
func (c *Client) CancelRun(ctx context.Context, runID string) (*engine.RunCancelResult, error) {
	return call[engine.RunCancelResult](ctx, c, rpc.MethodRunCancel, engine.RunIDRequest{RunID: runID})
}

// SchedStats calls sched.stats.
func (c *Client) SchedStats(ctx context.Context) (*engine.SchedStats, error) {
	return call[engine.SchedStats](ctx, c, rpc.MethodSchedStats, nil)
}

// PlanErrors returns the {pointer, message} list of a -32020 "plan
// invalid" error (nil for other errors).
func PlanErrors(err error) []plan.FieldError {
	re, ok := err.(*rpc.Error)
	if !ok || re.Code != engine.CodePlanInvalid || len(re.Data) == 0 {
		return nil
	}
	var d engine.PlanErrorData
	if json.Unmarshal(re.Data, &d) != nil {
		return nil
	}
	return d.Errors
}
