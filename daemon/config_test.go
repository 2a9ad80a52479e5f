package daemon_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
)

var update = flag.Bool("update", false, "rewrite engine.schema.json")

// TestConfigSchemaUpToDate checks that the embedded schema is the one
// reflected from FileConfig (go generate ./daemon rewrites it).
func TestConfigSchemaUpToDate(t *testing.T) {
	want, err := daemon.GenerateConfigSchema()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("engine.schema.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(daemon.ConfigSchema(), want) {
		t.Fatal("engine.schema.json is stale: run go generate ./daemon")
	}
}

func getenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		json string
		want []string
	}{
		{`{"limits":{"max_connections":0}}`, []string{"at /limits/max_connections: minimum: got 0, want 1"}},
		{`{"limits":{"max_connections":"many"}}`, []string{"at /limits/max_connections: got string, want integer"}},
		{`{"threads":-1,"log_level":"loud"}`, []string{"at /log_level: value must be one of", "at /threads: minimum: got -1, want 0"}},
		{`{"thread":4}`, []string{"at (top level): additional properties 'thread' not allowed"}},
		{`{"limits":{"max_inflight_per_conn":4}}`, []string{"at /limits/max_inflight_per_conn: maximum: got 4, want 1"}},
		{`{"state_dir":"relative/dir"}`, []string{"at /state_dir: 'relative/dir' does not match pattern"}},
		{`{"shutdown_timeout_seconds":0}`, []string{"at /shutdown_timeout_seconds: exclusiveMinimum: got 0, want 0"}},
		{"{\n  \"threads\": 4,\n  \"backend\": \n}", []string{"invalid JSON: line 4, column 1"}},
		{`[]`, []string{"at (top level): got array, want object"}},
	} {
		_, err := daemon.ParseConfig("engine.json", []byte(tc.json))
		var ce *daemon.ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: got %v, want a ConfigError", tc.json, err)
			continue
		}
		if len(ce.Problems) != len(tc.want) {
			t.Errorf("%s: problems %q, want %q", tc.json, ce.Problems, tc.want)
			continue
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(ce.Problems[i], w) {
				t.Errorf("%s: problem %q, want prefix %q", tc.json, ce.Problems[i], w)
			}
		}
	}
}

func TestConfigResolve(t *testing.T) {
	fc, err := daemon.ParseConfig("engine.json", []byte(`{
		"threads": 3, "admin_group": "0",
		"limits": {"max_request_bytes": 4096, "write_timeout_seconds": 1.5},
		"idle_exit_seconds": 60, "log_level": "debug"}`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := fc.Resolve("engine.json", getenv(map[string]string{
		"STATE_DIRECTORY": "/var/lib/llm-engine:/var/lib/other", "HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7"}))
	if err != nil {
		t.Fatal(err)
	}
	if s.StateDir != "/var/lib/llm-engine" || s.CacheDir != "/home/u/.cache/llm-engine" || s.Listen != "/run/user/7/llm-engine/engine.sock" {
		t.Errorf("dirs: %+v", s)
	}
	if s.Threads != 3 || s.IdleExit != time.Minute || s.ShutdownTimeout != daemon.DefaultShutdownTimeout || s.LogLevel != "debug" {
		t.Errorf("settings: %+v", s)
	}
	if s.Server.MaxRequestBytes != 4096 || s.Server.WriteTimeout != 1500*time.Millisecond || s.Server.MaxConnections != daemon.DefaultMaxConnections || len(s.Server.AdminGIDs) != 1 || s.Server.AdminGIDs[0] != 0 {
		t.Errorf("server config: %+v", s.Server)
	}

	// A group that does not exist names the field.
	fc, _ = daemon.ParseConfig("engine.json", []byte(`{"admin_group":"no-such-group-llme"}`))
	if _, err := fc.Resolve("engine.json", getenv(map[string]string{"HOME": "/h"})); err == nil || !strings.Contains(err.Error(), "at /admin_group: no such group") {
		t.Errorf("unknown group: %v", err)
	}
	// Group names resolve through the group database.
	fc, _ = daemon.ParseConfig("engine.json", []byte(`{"admin_group":"root"}`))
	if s, err := fc.Resolve("engine.json", getenv(map[string]string{"HOME": "/h"})); err != nil || s.Server.AdminGIDs[0] != 0 {
		t.Errorf("group root: %+v %v", s, err)
	}
	// No HOME and no systemd directories: a clear error.
	if _, err := (&daemon.FileConfig{}).Resolve("engine.json", getenv(nil)); err == nil || !strings.Contains(err.Error(), "at /state_dir") {
		t.Errorf("no HOME: %v", err)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "engine.json")
	if fc, err := daemon.LoadConfig(missing, false); err != nil || fc.Threads != 0 {
		t.Fatalf("missing default file: %+v %v", fc, err)
	}
	if _, err := daemon.LoadConfig(missing, true); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing explicit file: %v", err)
	}
}

// The packaged default configuration is valid and resolves.
func TestPackagedConfig(t *testing.T) {
	fc, err := daemon.LoadConfig("../packaging/engine.json", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fc.Resolve("../packaging/engine.json", getenv(map[string]string{"STATE_DIRECTORY": "/var/lib/llm-engine", "CACHE_DIRECTORY": "/var/cache/llm-engine"})); err != nil {
		// admin_group names a group the package creates; it may not exist here.
		if !strings.Contains(err.Error(), "/admin_group") {
			t.Fatal(err)
		}
	}
}
