package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	sjs "github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/weos/llm-engine/engine"
)

type nopEngine struct{}

func (nopEngine) Info() engine.Info { return engine.Info{Version: "1.2.3"} }
func (nopEngine) LoadModel(context.Context, engine.LoadRequest) (*engine.ModelInfo, error) {
	return nil, nil
}
func (nopEngine) ListModels() []engine.ModelInfo { return nil }
func (nopEngine) UnloadModel(string) error       { return nil }
func (nopEngine) Generate(_ context.Context, req engine.GenerateRequest, _ func(engine.TokenEvent)) (*engine.GenerateResult, error) {
	return &engine.GenerateResult{ModelID: req.Model}, nil
}

func TestDocumentListsEveryMethod(t *testing.T) {
	doc := NewService(nopEngine{}).Document()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	if doc.OpenRPC != OpenRPCVersion || doc.Info.Version != "1.2.3" {
		t.Fatalf("header: %s %+v", doc.OpenRPC, doc.Info)
	}
	var names []string
	for _, m := range doc.Methods {
		names = append(names, m.Name)
	}
	for _, m := range Methods() {
		if !slices.Contains(names, m.Name) {
			t.Errorf("method %s missing from the document", m.Name)
		}
	}
	if len(names) != len(Methods()) {
		t.Errorf("document has %d methods, table %d", len(names), len(Methods()))
	}

	// Every schema in the document is a valid JSON schema.
	c := sjs.NewCompiler()
	n := 0
	for _, m := range doc.Methods {
		cds := append([]ContentDescriptor{*m.Result}, m.Params...)
		for _, nt := range m.Notifications {
			cds = append(cds, nt.Params...)
		}
		for _, cd := range cds {
			if m.Name == MethodDiscover && cd.Name == "OpenRPC Schema" {
				continue // a $ref to the remote meta-schema
			}
			sb, _ := json.Marshal(cd.Schema)
			v, err := sjs.UnmarshalJSON(strings.NewReader(string(sb)))
			if err != nil {
				t.Fatal(err)
			}
			url := fmt.Sprintf("mem://%d.json", n)
			n++
			if err := c.AddResource(url, v); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Compile(url); err != nil {
				t.Errorf("%s %s: %v", m.Name, cd.Name, err)
			}
		}
	}
}

func TestGenerateDescriptors(t *testing.T) {
	doc := NewDocument("x")
	var gen *DocMethod
	for i := range doc.Methods {
		if doc.Methods[i].Name == MethodGenerate {
			gen = &doc.Methods[i]
		}
	}
	if gen == nil {
		t.Fatal("no generate")
	}
	params := map[string]ContentDescriptor{}
	for _, p := range gen.Params {
		params[p.Name] = p
	}
	if !params["model"].Required || params["max_tokens"].Required || params["max_tokens"].Schema.Type != "integer" {
		t.Fatalf("params: %+v", gen.Params)
	}
	if sp := params["sampling"].Schema; sp == nil || sp.Type != "object" || sp.Properties == nil {
		t.Fatalf("sampling schema: %+v", sp)
	}
	if len(gen.Notifications) != 1 || gen.Notifications[0].Name != NotificationGenerateToken {
		t.Fatalf("notifications: %+v", gen.Notifications)
	}
	rs, _ := json.Marshal(gen.Result.Schema)
	for _, f := range []string{"run_id", "finish_reason", "metrics", "tokens_per_second"} {
		if !strings.Contains(string(rs), `"`+f+`"`) {
			t.Errorf("result schema lacks %s: %s", f, rs)
		}
	}
}

func TestCallDecodesParams(t *testing.T) {
	s := NewService(nopEngine{})
	res, err := s.Call(context.Background(), MethodGenerate, json.RawMessage(`{"model":"m","prompt":"","sampling":{"temperature":0.7,"seed":3}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.(*engine.GenerateResult).ModelID != "m" {
		t.Fatalf("%+v", res)
	}
	_, err = s.Call(context.Background(), "nope", nil, nil)
	if AsError(err).Code != CodeMethodNotFound {
		t.Fatal(err)
	}
	_, err = s.Call(context.Background(), MethodGenerate, json.RawMessage(`{"model":"m","prompt":"p","logprobs":"x"}`), nil)
	if e := AsError(err); e.Code != CodeInvalidParams || e.Message != `invalid params: field "logprobs": expected integer, got string` {
		t.Fatalf("%#v", e)
	}
}

type coded struct{}

func (coded) Error() string  { return "model not found: x" }
func (coded) RPCCode() int64 { return -32010 }
func (coded) RPCData() any   { return []string{"a"} }

func TestAsError(t *testing.T) {
	if AsError(nil) != nil {
		t.Fatal("nil")
	}
	e := AsError(fmt.Errorf("loading: %w", coded{}))
	if e.Code != -32010 || e.Message != "loading: model not found: x" || string(e.Data) != `["a"]` {
		t.Fatalf("%#v", e)
	}
	if e := AsError(errors.New("disk full")); e.Code != CodeServerError || e.Message != "disk full" {
		t.Fatalf("%#v", e)
	}
	orig := InvalidParams(`field "x": bad`)
	if AsError(fmt.Errorf("wrap: %w", orig)) != orig {
		t.Fatal("*Error not kept")
	}
}
