package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
)

// Authorisation. Anyone who can connect to the socket (mode 0660, group
// llm-engine under systemd) may read (engine.info, model.list,
// rpc.discover) and generate with a loaded model. Mutating calls
// (rpc.Method.Mutating: model.load, model.unload, and future plan, power
// and lifecycle methods) need an admin peer: uid 0, the daemon's own uid,
// or a process whose primary or supplementary groups include an admin group
// (Config.AdminGIDs). generate with a model that is not loaded (a path,
// which the engine would load and keep) counts as model.load.
//
// A denied call gets a -32030 "unauthorized" error (engine.CodeUnauthorized)
// and is logged with the peer's uid, gid and pid.

// IsAdmin reports whether peer may call mutating methods under cfg, for a
// daemon running as daemonUID.
func IsAdmin(peer Peer, daemonUID uint32, adminGIDs []uint32) bool {
	if !peer.Known {
		return false
	}
	if peer.UID == 0 || peer.UID == daemonUID {
		return true
	}
	for _, g := range adminGIDs {
		if peer.GID == g || slices.Contains(peer.Groups, g) {
			return true
		}
	}
	return false
}

// mutating lists the methods of the table that need an admin peer.
var mutating = func() map[string]bool {
	m := map[string]bool{}
	for _, meth := range rpc.Methods() {
		if meth.Mutating {
			m[meth.Name] = true
		}
	}
	return m
}()

// authorize returns nil when peer may call method with params, else a
// -32030 error saying what is needed.
func (s *Server) authorize(peer Peer, method string, params json.RawMessage, cfg *Config) error {
	what := ""
	switch {
	case mutating[method]:
		what = method
	case method == rpc.MethodGenerate:
		if ref := s.loadsOnDemand(params); ref != "" {
			what = fmt.Sprintf("generate with a model that is not loaded (%q would be loaded)", ref)
		}
	}
	if what == "" || IsAdmin(peer, s.uid, cfg.AdminGIDs) {
		return nil
	}
	need := "uid 0 or the daemon's user"
	if len(cfg.AdminGIDs) > 0 {
		name := cfg.AdminGroupName
		if name == "" {
			name = fmt.Sprint(cfg.AdminGIDs[0])
		}
		need += fmt.Sprintf(", or membership of group %s", name)
	}
	msg := fmt.Sprintf("unauthorized: %s changes the engine's state and needs %s", what, need)
	if !peer.Known {
		msg += " (the peer's credentials are unknown)"
	}
	return &engine.Error{Code: engine.CodeUnauthorized, Msg: msg}
}

// loadsOnDemand returns generate's model reference when the engine would
// load it (it is not the id of a loaded model and looks like a path or
// names an existing file, the engine's own rule), else "".
func (s *Server) loadsOnDemand(params json.RawMessage) string {
	var p struct {
		Model string `json:"model"`
	}
	if json.Unmarshal(params, &p) != nil || p.Model == "" {
		return "" // bad params: the method's own checks reply
	}
	for _, m := range s.eng.ListModels() {
		if m.ModelID == p.Model {
			return ""
		}
	}
	if strings.ContainsRune(p.Model, '/') || strings.HasSuffix(p.Model, ".gguf") {
		return p.Model
	}
	if _, err := os.Stat(p.Model); err == nil {
		return p.Model
	}
	return ""
}

// LookupGroup resolves an admin group given by name or numeric gid.
func LookupGroup(g string) (uint32, error) {
	if g == "" {
		return 0, fmt.Errorf("empty group")
	}
	if n, err := strconv.ParseUint(g, 10, 32); err == nil {
		return uint32(n), nil
	}
	gr, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("no such group %q", g)
	}
	n, err := strconv.ParseUint(gr.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q has a non-numeric gid %q", g, gr.Gid)
	}
	return uint32(n), nil
}
