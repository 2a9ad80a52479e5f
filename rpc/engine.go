// Package rpc defines the JSON-RPC 2.0 API of llm-engined: the method table,
// the params and result types (the wire types live in package engine), the
// params decoding rules, and the OpenRPC document generated from the table.
// The transport (sockets, jsonrpc2 connections, limits) lives in daemon/; a
// Go client lives in rpc/client.
package rpc

import (
	"context"

	"github.com/weos/llm-engine/engine"
)

// Engine is what the daemon drives. *engine.Engine satisfies it; tests use
// fakes.
type Engine interface {
	Info() engine.Info
	LoadModel(ctx context.Context, req engine.LoadRequest) (*engine.ModelInfo, error)
	ListModels() []engine.ModelInfo
	UnloadModel(id string) error
	// Generate runs to completion. onToken is called synchronously for each
	// token when req.Stream is true (it may be nil otherwise). Cancelling ctx
	// (client disconnect, daemon shutdown) must stop the run, which then
	// reports FinishReason "cancelled".
	Generate(ctx context.Context, req engine.GenerateRequest, onToken func(engine.TokenEvent)) (*engine.GenerateResult, error)
}

// Notifier sends a notification to the client of the call in progress.
// Notify must not block on the network: the daemon queues notifications and
// writes them in order, before the call's reply. If the client cannot keep up
// or has gone, the call's context is cancelled and later notifications are
// dropped.
type Notifier interface {
	Notify(method string, params any)
}

// NotifierFunc adapts a function to Notifier.
type NotifierFunc func(method string, params any)

// Notify calls f.
func (f NotifierFunc) Notify(method string, params any) { f(method, params) }
