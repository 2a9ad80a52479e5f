package engine

import (
	"context"
	"fmt"
)

// Actor is who asked for something: the peer process of the RPC connection
// as the kernel reported it (SO_PEERCRED), with the daemon's authorisation
// verdict. It is recorded in run records, the plan audit log and events.
type Actor struct {
	// Known is false when the credentials are unknown; the zero Actor
	// (no Known, no Admin) is what an in-process caller without a context
	// actor is recorded as: "engine".
	Known bool   `json:"known"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	PID   int32  `json:"pid"`
	// Exe is the peer's executable (/proc/PID/exe), or "comm:NAME" when
	// only /proc/PID/comm was readable, or "" when neither was.
	Exe string `json:"exe,omitempty"`
	// Admin: the daemon would let this peer call mutating methods.
	Admin bool `json:"admin"`
}

// String names the actor in messages: "uid 1000 pid 42 (/usr/bin/enginectl)".
func (a Actor) String() string {
	if !a.Known {
		return "engine"
	}
	s := fmt.Sprintf("uid %d pid %d", a.UID, a.PID)
	if a.Exe != "" {
		s += " (" + a.Exe + ")"
	}
	return s
}

type actorKey struct{}

// WithActor returns ctx carrying the actor of the call (set by the rpc
// layer from the daemon's peer credentials).
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries, if any. A context without one
// is an in-process caller (tests, the daemon itself), trusted as admin.
func ActorFrom(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(Actor)
	return a, ok
}

// isAdmin reports whether the caller may change the engine's state: an
// admin peer, or an in-process caller.
func isAdmin(ctx context.Context) bool {
	a, ok := ActorFrom(ctx)
	return !ok || a.Admin
}

// actorOf is the actor recorded for ctx's caller.
func actorOf(ctx context.Context) Actor {
	a, _ := ActorFrom(ctx)
	return a
}
