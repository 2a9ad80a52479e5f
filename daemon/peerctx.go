package daemon

import (
	"fmt"
	"os"
	"strings"

	"github.com/weos/llm-engine/rpc"
)

// Hooks for the engine's plan audit log, run records and event
// subscriptions (issue 7): who is calling, and how far behind a client's
// notifications are.

// rpcPeer is the connection's peer for rpc.WithPeer: its credentials, its
// executable and whether it may call mutating methods under cfg.
func (c *conn) rpcPeer(cfg *Config) rpc.Peer {
	p := c.peer
	if !p.Known {
		return rpc.Peer{}
	}
	return rpc.Peer{Known: true, UID: p.UID, GID: p.GID, PID: p.PID, Groups: p.Groups,
		Exe: peerExe(p.PID), Admin: IsAdmin(p, c.srv.uid, cfg.AdminGIDs)}
}

// peerExe is /proc/PID/exe, or "comm:NAME" from /proc/PID/comm when the
// link is not readable (a process of another user, for a daemon that is not
// root), or "".
func peerExe(pid int32) string {
	if exe, err := os.Readlink(fmt.Sprintf("%s/%d/exe", procRoot, pid)); err == nil {
		return exe
	}
	if b, err := os.ReadFile(fmt.Sprintf("%s/%d/comm", procRoot, pid)); err == nil {
		return "comm:" + strings.TrimSpace(string(b))
	}
	return ""
}

// Backlog implements rpc.BacklogNotifier: notifications queued and not yet
// being written, and the queue's bound (beyond it the call is cancelled).
func (n *notifier) Backlog() (queued, limit int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.queue), n.maxQueue
}
