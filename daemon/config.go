package daemon

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/invopop/jsonschema"
	jsv "github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/weos/llm-engine/engine"
)

// DefaultConfigPath is where the packaged daemon reads its configuration.
const DefaultConfigPath = "/etc/llm-engine/engine.json"

// Defaults of the configuration file's optional fields.
const (
	DefaultShutdownTimeout = 20 * time.Second
	DefaultLogLevel        = "info"
	DefaultCacheMaxBytes   = 16 << 30
)

// FileConfig is the configuration file (/etc/llm-engine/engine.json). Every
// field is optional; an absent field takes its default. The JSON Schema in
// engine.schema.json is generated from this type (go generate) and every
// file is validated against it before use: an unknown field, a wrong type
// or a value out of range is an error naming the field by its JSON pointer.
type FileConfig struct {
	Listen        string  `json:"listen,omitempty" jsonschema:"pattern=^/" jsonschema_description:"Unix socket path used when not socket-activated (foreground mode). Default: $XDG_RUNTIME_DIR/llm-engine/engine.sock. Ignored under systemd: the socket unit owns the socket. Needs a restart."`
	StateDir      string  `json:"state_dir,omitempty" jsonschema:"pattern=^/" jsonschema_description:"State directory (run records, plans). Default: $STATE_DIRECTORY (systemd StateDirectory=), else $XDG_STATE_HOME/llm-engine or ~/.local/state/llm-engine. Needs a restart."`
	CacheDir      string  `json:"cache_dir,omitempty" jsonschema:"pattern=^/" jsonschema_description:"Cache directory. Default: $CACHE_DIRECTORY (systemd CacheDirectory=), else $XDG_CACHE_HOME/llm-engine or ~/.cache/llm-engine. Needs a restart."`
	CacheMaxBytes int64   `json:"cache_max_bytes,omitempty" jsonschema:"minimum=1048576" jsonschema_description:"Bound of the quantization cache (cache_dir/quant, the tensors a plan converts at load): after a load writes or uses an entry, the least recently used entries beyond it are deleted, never one a loaded model maps (default 17179869184, 16 GiB). Needs a restart."`
	Threads       int     `json:"threads,omitempty" jsonschema:"minimum=0,maximum=4096" jsonschema_description:"Worker threads for inference; 0 or absent: one per CPU. Needs a restart."`
	Backend       string  `json:"backend,omitempty" jsonschema_description:"Kernel backend (e.g. cpu-avx2, cpu-generic; engine.info lists those this host can run); absent: the best the CPU supports. Needs a restart."`
	AdminGroup    string  `json:"admin_group,omitempty" jsonschema:"pattern=^[^\\s:]+$" jsonschema_description:"Group (name or numeric gid) whose members may call mutating methods (model.load, model.unload, ...) besides root and the daemon's user. Absent: nobody else. Applied on reload."`
	Limits        Limits  `json:"limits,omitzero" jsonschema_description:"Limits on clients. Applied on reload (to new requests)."`
	IdleExit      float64 `json:"idle_exit_seconds,omitempty" jsonschema:"minimum=0" jsonschema_description:"Exit (status 0) after this many seconds with no client connected and no run, when socket-activated: systemd keeps the socket and starts the daemon again on the next connection. 0 or absent: never. Applied on reload."`
	Shutdown      float64 `json:"shutdown_timeout_seconds,omitempty" jsonschema:"exclusiveMinimum=0,maximum=3600" jsonschema_description:"On SIGTERM, how long runs in progress may go on before they are cancelled (default 20). Keep it below the unit's TimeoutStopSec. Applied on reload."`
	DefaultModel  string  `json:"default_model,omitempty" jsonschema:"pattern=^/" jsonschema_description:"GGUF model loaded at start (in the background, after READY=1). Applied on reload (loaded if not loaded yet)."`
	LogLevel      string  `json:"log_level,omitempty" jsonschema:"enum=debug,enum=info,enum=warn,enum=error" jsonschema_description:"Log level (default info). Applied on reload."`
	// Power and MetricsListen: see power.go.
	Power         PowerConfig `json:"power,omitzero" jsonschema_description:"Energy meter and power cap of the inference worker threads (see power/README.md). Needs a restart."`
	MetricsListen string      `json:"metrics_listen,omitempty" jsonschema_description:"Loopback address (host:port, e.g. 127.0.0.1:9464) of an HTTP Prometheus endpoint at /metrics. Absent: off. A non-loopback address is a configuration error. Needs a restart."`
}

// Limits are FileConfig's limits on clients.
type Limits struct {
	MaxRequestBytes    int64   `json:"max_request_bytes,omitempty" jsonschema:"minimum=1024,maximum=1073741824" jsonschema_description:"Largest JSON-RPC request accepted (default 1048576); a bigger one gets a -32600 reply and the connection is closed."`
	MaxConnections     int     `json:"max_connections,omitempty" jsonschema:"minimum=1,maximum=65536" jsonschema_description:"Concurrent client connections (default 64); more get a -32000 server busy reply."`
	MaxInflightPerConn int     `json:"max_inflight_per_conn,omitempty" jsonschema:"minimum=1,maximum=1" jsonschema_description:"Calls in progress per connection. Calls on one connection are answered in order, one at a time: only 1 is supported (pipelined requests wait in the socket buffer, unread)."`
	WriteTimeout       float64 `json:"write_timeout_seconds,omitempty" jsonschema:"exclusiveMinimum=0,maximum=3600" jsonschema_description:"A client that does not read for this long is disconnected and its run cancelled (default 30)."`
	IdleTimeout        float64 `json:"idle_timeout_seconds,omitempty" jsonschema:"exclusiveMinimum=0,maximum=86400" jsonschema_description:"A connection with no call in progress and no request for this long is closed (default 300)."`
	RequestTimeout     float64 `json:"request_timeout_seconds,omitempty" jsonschema:"exclusiveMinimum=0,maximum=3600" jsonschema_description:"A request must arrive whole within this many seconds of its first byte (default 30), or the client gets a -32600 reply and is disconnected."`
}

//go:generate go test -run TestConfigSchemaUpToDate -update .

//go:embed engine.schema.json
var configSchemaJSON []byte

// ConfigSchema returns the JSON Schema of the configuration file.
func ConfigSchema() []byte { return bytes.Clone(configSchemaJSON) }

// GenerateConfigSchema reflects FileConfig into its JSON Schema (what
// engine.schema.json holds).
func GenerateConfigSchema() ([]byte, error) {
	r := &jsonschema.Reflector{DoNotReference: true, ExpandedStruct: true}
	s := r.ReflectFromType(reflect.TypeFor[FileConfig]())
	s.ID = "https://github.com/weos/llm-engine/daemon/engine.schema.json"
	s.Title = "llm-engined configuration (/etc/llm-engine/engine.json)"
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

var compiledSchema = func() *jsv.Schema {
	doc, err := jsv.UnmarshalJSON(bytes.NewReader(configSchemaJSON))
	if err != nil {
		panic("daemon: engine.schema.json: " + err.Error())
	}
	c := jsv.NewCompiler()
	if err := c.AddResource("engine.schema.json", doc); err != nil {
		panic("daemon: engine.schema.json: " + err.Error())
	}
	s, err := c.Compile("engine.schema.json")
	if err != nil {
		panic("daemon: engine.schema.json: " + err.Error())
	}
	return s
}()

// ConfigError is a configuration that cannot be used: the daemon refuses to
// start (exit status 78, EX_CONFIG) or, on reload, keeps its configuration.
type ConfigError struct {
	Path     string
	Problems []string // each names the field by its JSON pointer
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("config %s: %s", e.Path, strings.Join(e.Problems, "; "))
}

// ParseConfig validates data against the schema and decodes it.
func ParseConfig(path string, data []byte) (*FileConfig, error) {
	cerr := &ConfigError{Path: path}
	doc, err := jsv.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		cerr.Problems = []string{"invalid JSON: " + jsonErrorPosition(data, err)}
		return nil, cerr
	}
	if err := compiledSchema.Validate(doc); err != nil {
		var ve *jsv.ValidationError
		if !errors.As(err, &ve) {
			cerr.Problems = []string{err.Error()}
			return nil, cerr
		}
		for _, u := range ve.BasicOutput().Errors {
			if u.Error == nil {
				continue
			}
			msg := u.Error.String()
			if strings.HasPrefix(msg, "validation failed") || strings.HasPrefix(msg, "doesn't validate with") {
				continue // summaries of the detailed errors
			}
			loc := u.InstanceLocation
			if loc == "" {
				loc = "(top level)"
			}
			cerr.Problems = append(cerr.Problems, fmt.Sprintf("at %s: %s", loc, msg))
		}
		sort.Strings(cerr.Problems)
		if len(cerr.Problems) == 0 {
			cerr.Problems = []string{err.Error()}
		}
		return nil, cerr
	}
	var fc FileConfig
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&fc); err != nil { // the schema should have caught it
		cerr.Problems = []string{err.Error()}
		return nil, cerr
	}
	return &fc, nil
}

// jsonErrorPosition describes a JSON syntax error with its line and column.
func jsonErrorPosition(data []byte, err error) string {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	off := min(max(int(se.Offset)-1, 0), len(data)) // Offset counts the bad byte
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return fmt.Sprintf("line %d, column %d: %s", line, col, se.Error())
}

// LoadConfig reads the configuration file at path. A missing file is an
// error only when explicit (given with --config); otherwise the defaults
// apply.
func LoadConfig(path string, explicit bool) (*FileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return &FileConfig{}, nil
		}
		return nil, &ConfigError{Path: path, Problems: []string{err.Error()}}
	}
	return ParseConfig(path, data)
}

// Settings are a FileConfig resolved for use: defaults applied, directories
// chosen, the admin group looked up.
type Settings struct {
	Listen          string
	StateDir        string
	CacheDir        string
	CacheMaxBytes   int64
	Threads         int
	Backend         string
	AdminGroup      string
	Server          Config // limits and admin gids (no logger)
	IdleExit        time.Duration
	ShutdownTimeout time.Duration
	DefaultModel    string
	LogLevel        string
	Power           engine.PowerOptions // from FileConfig.Power (power.go)
	MetricsListen   string
}

// Resolve applies the defaults to fc, with getenv giving the environment
// (systemd's STATE_DIRECTORY and CACHE_DIRECTORY, XDG_*, HOME). Errors are
// *ConfigError naming the field.
func (fc *FileConfig) Resolve(path string, getenv func(string) string) (*Settings, error) {
	cerr := &ConfigError{Path: path}
	s := &Settings{
		Listen:        fc.Listen,
		StateDir:      fc.StateDir,
		CacheDir:      fc.CacheDir,
		CacheMaxBytes: fc.CacheMaxBytes,
		Threads:       fc.Threads,
		Backend:       fc.Backend,
		AdminGroup:    fc.AdminGroup,
		DefaultModel:  fc.DefaultModel,
		LogLevel:      fc.LogLevel,
		IdleExit:      seconds(fc.IdleExit),
		Server: Config{
			MaxRequestBytes: fc.Limits.MaxRequestBytes,
			MaxConnections:  fc.Limits.MaxConnections,
			WriteTimeout:    seconds(fc.Limits.WriteTimeout),
			IdleTimeout:     seconds(fc.Limits.IdleTimeout),
			RequestTimeout:  seconds(fc.Limits.RequestTimeout),
		},
		ShutdownTimeout: seconds(fc.Shutdown),
	}
	if s.ShutdownTimeout <= 0 {
		s.ShutdownTimeout = DefaultShutdownTimeout
	}
	if s.LogLevel == "" {
		s.LogLevel = DefaultLogLevel
	}
	s.Power, s.MetricsListen = fc.Power.options(), fc.MetricsListen
	if err := checkMetricsListen(fc.MetricsListen); err != nil {
		cerr.Problems = append(cerr.Problems, "at /metrics_listen: "+err.Error())
	}
	s.Server = s.Server.withDefaults()
	s.Server.Logger = nil
	if fc.AdminGroup != "" {
		gid, err := LookupGroup(fc.AdminGroup)
		if err != nil {
			cerr.Problems = append(cerr.Problems, fmt.Sprintf("at /admin_group: %v", err))
		} else {
			s.Server.AdminGIDs = []uint32{gid}
			s.Server.AdminGroupName = fc.AdminGroup
		}
	}
	var err error
	if s.StateDir == "" {
		if s.StateDir, err = systemdDir(getenv, "STATE_DIRECTORY", "XDG_STATE_HOME", filepath.Join(".local", "state")); err != nil {
			cerr.Problems = append(cerr.Problems, "at /state_dir: "+err.Error())
		}
	}
	if s.CacheDir == "" {
		if s.CacheDir, err = systemdDir(getenv, "CACHE_DIRECTORY", "XDG_CACHE_HOME", ".cache"); err != nil {
			cerr.Problems = append(cerr.Problems, "at /cache_dir: "+err.Error())
		}
	}
	if s.CacheMaxBytes == 0 {
		s.CacheMaxBytes = DefaultCacheMaxBytes
	}
	if s.Listen == "" {
		if rt := getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(rt) {
			s.Listen = filepath.Join(rt, "llm-engine", "engine.sock")
		}
	}
	if len(cerr.Problems) > 0 {
		return nil, cerr
	}
	return s, nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// systemdDir is the first entry of systemd's colon-separated directory
// variable, else the XDG default.
func systemdDir(getenv func(string) string, sdVar, xdgVar, fallback string) (string, error) {
	if v := getenv(sdVar); v != "" {
		first, _, _ := strings.Cut(v, ":")
		if filepath.IsAbs(first) {
			return first, nil
		}
	}
	return xdgDirEnv(getenv, xdgVar, fallback)
}
