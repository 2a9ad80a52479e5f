package rpc

import (
	"context"
	"encoding/json"
	"reflect"
	"sort"
	"sync"

	"github.com/invopop/jsonschema"
	"github.com/weos/llm-engine/engine"
)

// Method names: they are a contract with clients.
const (
	MethodEngineInfo  = "engine.info"
	MethodModelLoad   = "model.load"
	MethodModelList   = "model.list"
	MethodModelUnload = "model.unload"
	MethodGenerate    = "generate"
	MethodDiscover    = "rpc.discover"

	// NotificationGenerateToken is sent by the daemon during a streaming
	// generate call, once per TokenEvent, in order, before the reply.
	NotificationGenerateToken = "generate.token"
	// NotificationModelProgress is sent during model.load while the model
	// is quantized at load or repacked (engine.ModelLoadingEvent), before
	// the reply.
	NotificationModelProgress = "model.progress"
)

// NoParams is the params type of methods that take none: params may be
// absent, null, {} or [].
type NoParams struct{}

// ModelListResult is model.list's result.
type ModelListResult struct {
	Models []engine.ModelInfo `json:"models"`
}

// UnloadParams is model.unload's params.
type UnloadParams struct {
	ModelID string `json:"model_id"`
}

// UnloadResult is model.unload's result.
type UnloadResult struct {
	ModelID  string `json:"model_id"`
	Unloaded bool   `json:"unloaded"`
}

// Method describes one JSON-RPC method of the table.
type Method struct {
	Name        string
	Summary     string
	Description string
	// Params is the struct type of the by-name params object (NoParams when
	// the method takes none); Result the type of the result.
	Params reflect.Type
	Result reflect.Type
	// Notifications lists the notifications the daemon may send to the
	// caller while the call runs.
	Notifications []Notification
	// Mutating is true for methods that change the engine's state (loaded
	// models, plans, power settings, the daemon's lifecycle). The daemon
	// lets only admin peers call them (uid 0, its own uid, members of its
	// admin group); others get -32030 "unauthorized". Reads and generate
	// are open to any peer that can connect (generate with a model that is
	// not loaded counts as model.load: see daemon/authz.go).
	Mutating bool
	// Examples are OpenRPC example pairings (params by name, result) shown
	// in the document; a test validates them against the params schema.
	Examples []Example

	resultSchema *jsonschema.Schema // overrides the schema reflected from Result
	paramsSchema *jsonschema.Schema // reflected once, used to check params
	call         func(ctx context.Context, s *Service, raw json.RawMessage, n Notifier) (any, error)
}

// Notification describes a server-to-client notification.
type Notification struct {
	Name    string
	Summary string
	Params  reflect.Type
}

// method builds a Method whose params decode into P and whose result is R.
// validate (may be nil) checks semantic constraints after decoding.
func method[P, R any](name, summary, description string, validate func(*P) error,
	fn func(ctx context.Context, s *Service, p *P, n Notifier) (R, error)) *Method {
	m := &Method{
		Name:        name,
		Summary:     summary,
		Description: description,
		Params:      reflect.TypeFor[P](),
		Result:      reflect.TypeFor[R](),
	}
	m.paramsSchema = reflectSchema(m.Params)
	m.call = func(ctx context.Context, s *Service, raw json.RawMessage, n Notifier) (any, error) {
		var p P
		if err := decodeParams(raw, &p, m.paramsSchema); err != nil {
			return nil, err
		}
		if validate != nil {
			if err := validate(&p); err != nil {
				return nil, err
			}
		}
		return fn(ctx, s, &p, n)
	}
	return m
}

var (
	tableOnce sync.Once
	table     []*Method
	byName    map[string]*Method
)

func methodTable() ([]*Method, map[string]*Method) {
	tableOnce.Do(func() {
		table = buildTable()
		byName = make(map[string]*Method, len(table))
		for _, m := range table {
			if _, dup := byName[m.Name]; dup {
				panic("rpc: duplicate method " + m.Name)
			}
			byName[m.Name] = m
		}
	})
	return table, byName
}

func buildTable() []*Method {
	info := method(MethodEngineInfo, "Describe the engine and this host.",
		"Version, Go version, the backends this host can run and its CPU features.",
		nil,
		func(ctx context.Context, s *Service, _ *NoParams, _ Notifier) (engine.Info, error) {
			return s.eng.Info(), nil
		})

	load := method(MethodModelLoad, "Load a GGUF model.",
		"Loads the model file at path (a path on the daemon's host) under an optional plan "+
			"(a plan name or an inline plan object) and returns its description, including the model_id "+
			"to use in later calls.",
		func(p *engine.LoadRequest) error {
			if p.Path == "" {
				return InvalidParams(`field "path": must not be empty`)
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *engine.LoadRequest, n Notifier) (*engine.ModelInfo, error) {
			if n != nil {
				ctx = engine.WithLoadProgress(ctx, func(ev engine.ModelLoadingEvent) { n.Notify(NotificationModelProgress, ev) })
			}
			return s.eng.LoadModel(ctx, *p)
		})
	load.Mutating = true
	load.Notifications = []Notification{{Name: NotificationModelProgress, Summary: "Load progress: quantization at load and repacking to the x8 weight layout, at most every 1% of each phase.", Params: reflect.TypeFor[engine.ModelLoadingEvent]()}}

	list := method(MethodModelList, "List the loaded models.", "",
		nil,
		func(ctx context.Context, s *Service, _ *NoParams, _ Notifier) (ModelListResult, error) {
			models := s.eng.ListModels()
			if models == nil {
				models = []engine.ModelInfo{}
			}
			return ModelListResult{Models: models}, nil
		})

	unload := method(MethodModelUnload, "Unload a model.", "Frees the model's memory; model_id comes from model.load or model.list.",
		func(p *UnloadParams) error {
			if p.ModelID == "" {
				return InvalidParams(`field "model_id": must not be empty`)
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *UnloadParams, _ Notifier) (UnloadResult, error) {
			if err := s.eng.UnloadModel(p.ModelID); err != nil {
				return UnloadResult{}, err
			}
			return UnloadResult{ModelID: p.ModelID, Unloaded: true}, nil
		})
	unload.Mutating = true

	gen := method(MethodGenerate, "Generate tokens from a prompt.",
		"Runs the prompt through the model (a model_id, or a path loaded on demand) and generates up to "+
			"max_tokens tokens. With stream: true the daemon sends one generate.token notification per "+
			"token, in order, before the reply. If the client disconnects the run is cancelled.",
		validateGenerate,
		func(ctx context.Context, s *Service, p *engine.GenerateRequest, n Notifier) (*engine.GenerateResult, error) {
			var onToken func(engine.TokenEvent)
			if p.Stream && n != nil {
				onToken = func(ev engine.TokenEvent) { n.Notify(NotificationGenerateToken, ev) }
			}
			return s.eng.Generate(ctx, *p, onToken)
		})
	info.Examples = []Example{example("info", map[string]any{}, map[string]any{
		"version": "0.1.0", "go_version": "go1.26", "backends": []string{"cpu-avx2", "cpu-generic"},
		"cpu_features": []string{"avx2", "fma"}, "num_cpu": 8})}
	gen.Examples = []Example{example("greedy", map[string]any{
		"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8, "sampling": map[string]any{"temperature": 0},
	}, nil)}
	gen.Notifications = []Notification{{
		Name:    NotificationGenerateToken,
		Summary: "One generated token (sent only when stream is true).",
		Params:  reflect.TypeFor[engine.TokenEvent](),
	}}

	discover := method(MethodDiscover, "Describe this API as an OpenRPC document.",
		"Returns the OpenRPC 1.x document generated from the daemon's method table.",
		nil,
		func(ctx context.Context, s *Service, _ *NoParams, _ Notifier) (*Document, error) {
			return s.Document(), nil
		})
	discover.resultSchema = &jsonschema.Schema{Ref: OpenRPCMetaSchema}

	t := append([]*Method{info, load, list, unload, gen, discover}, powerMethods()...) // power.go
	t = append(t, chatMethods()...)                                                    // chat.go
	return append(t, planMethods()...)                                                 // plans.go
}

func validateGenerate(p *engine.GenerateRequest) error {
	switch {
	case p.Model == "":
		return InvalidParams(`field "model": must not be empty`)
	case p.MaxTokens < 0:
		return InvalidParams(`field "max_tokens": must be >= 0`)
	case p.Logprobs < 0:
		return InvalidParams(`field "logprobs": must be >= 0`)
	}
	if sp := p.Sampling; sp != nil {
		switch {
		case sp.Temperature < 0:
			return InvalidParams(`field "sampling.temperature": must be >= 0`)
		case sp.TopK < 0:
			return InvalidParams(`field "sampling.top_k": must be >= 0`)
		case sp.TopP < 0 || sp.TopP > 1:
			return InvalidParams(`field "sampling.top_p": must be between 0 and 1`)
		}
	}
	return nil
}

// Methods returns the method table, in a stable order (the order of the
// OpenRPC document).
func Methods() []Method {
	t, _ := methodTable()
	out := make([]Method, len(t))
	for i, m := range t {
		out[i] = *m
	}
	return out
}

// MethodNames returns the registered method names, sorted.
func MethodNames() []string {
	t, _ := methodTable()
	names := make([]string, len(t))
	for i, m := range t {
		names[i] = m.Name
	}
	sort.Strings(names)
	return names
}

// Service binds the method table to an Engine.
type Service struct {
	eng Engine

	docOnce sync.Once
	doc     *Document

	streams streams // long-lived calls (events.subscribe), ended by Drain
}

// NewService returns a Service dispatching to eng.
func NewService(eng Engine) *Service { return &Service{eng: eng} }

// Document returns the OpenRPC document, with info.version taken from the
// engine.
func (s *Service) Document() *Document {
	s.docOnce.Do(func() { s.doc = NewDocument(s.eng.Info().Version) })
	return s.doc
}

// Call runs one method. params is the raw params member (nil when absent).
// n receives the call's notifications; it may be nil. Errors are *Error
// values (unknown method, bad params) or whatever the engine returned: map
// them with AsError. Call does not recover panics: the transport does.
func (s *Service) Call(ctx context.Context, name string, params json.RawMessage, n Notifier) (any, error) {
	_, m := methodTable()
	meth, ok := m[name]
	if !ok {
		return nil, Errorf(CodeMethodNotFound, "method not found: %q", name)
	}
	return meth.call(withActor(ctx), s, params, n)
}
