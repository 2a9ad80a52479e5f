package rpc

import (
	"context"

	"github.com/weos/llm-engine/engine"
)

// Peer is the process at the other end of the connection a call came on,
// as the daemon learnt it from the kernel (SO_PEERCRED, SO_PEERGROUPS) when
// the client connected, with the daemon's authorisation verdict. The daemon
// puts it in every call's context (WithPeer); Service.Call hands it to the
// engine as the call's engine.Actor, which the engine records in run
// records, the plan audit log and events, and uses for its own checks.
type Peer struct {
	Known  bool
	UID    uint32
	GID    uint32
	PID    int32
	Groups []uint32
	// Exe is /proc/PID/exe, or "comm:NAME" from /proc/PID/comm when the
	// executable is not readable, or "".
	Exe string
	// Admin: the peer may call Mutating methods.
	Admin bool
}

type peerKey struct{}

// WithPeer returns ctx carrying the calling peer.
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFromContext returns the calling peer, if the transport set one.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// Actor is the engine's record of a peer.
func (p Peer) Actor() engine.Actor {
	return engine.Actor{Known: p.Known, UID: p.UID, GID: p.GID, PID: p.PID, Exe: p.Exe, Admin: p.Admin}
}

// withActor passes the peer of ctx, if any, to the engine.
func withActor(ctx context.Context) context.Context {
	if p, ok := PeerFromContext(ctx); ok {
		return engine.WithActor(ctx, p.Actor())
	}
	return ctx
}

// BacklogNotifier is a Notifier that can tell how many notifications wait
// to be written to the client and how many it holds at most (the daemon's
// per-call queue). Long-lived streams (events.subscribe) use it to drop a
// subscriber that does not keep up, with a notice, before the queue
// overflows; the engine never waits for a client.
type BacklogNotifier interface {
	Notifier
	Backlog() (queued, limit int)
}
