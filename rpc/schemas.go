package rpc

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"

	"github.com/invopop/jsonschema"

	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/kernels"
)

// schemaMapper gives the reflected schemas of the method table the types
// whose JSON is not what reflection would guess: a plan is described by
// the plan's own schema (engine/plan's plan.schema.json, its $defs
// inlined), tensor types are names ("Q4_K"), tensor decisions are written
// with type names.
func schemaMapper(t reflect.Type) *jsonschema.Schema {
	switch t {
	case reflect.TypeFor[plan.Plan]():
		return planSchema()
	case reflect.TypeFor[kernels.Type]():
		return &jsonschema.Schema{Type: "string", Description: "tensor type name, e.g. F32, Q8_0, Q4_K"}
	case reflect.TypeFor[plan.TensorDecision]():
		r := jsonschema.Reflector{DoNotReference: true, Anonymous: true}
		s := r.ReflectFromType(reflect.TypeFor[tensorDecisionDoc]())
		s.Version = ""
		return s
	}
	return nil
}

// tensorDecisionDoc is plan.TensorDecision as written in JSON.
type tensorDecisionDoc struct {
	Name     string `json:"name"`
	Source   string `json:"source" jsonschema:"description=type in the file"`
	Target   string `json:"target" jsonschema:"description=type the engine computes with"`
	Rule     string `json:"rule" jsonschema:"enum=keep,enum=source,enum=default,enum=mix,enum=override"`
	Override string `json:"override,omitempty"`
	Fallback bool   `json:"fallback"`
	FromFile bool   `json:"from_file"`
	Reason   string `json:"reason"`
}

var planSchemaJSON = sync.OnceValue(func() []byte {
	var doc map[string]any
	if err := json.Unmarshal(plan.Schema(), &doc); err != nil {
		panic("rpc: plan schema: " + err.Error())
	}
	defs, _ := doc["$defs"].(map[string]any)
	delete(doc, "$schema")
	delete(doc, "$id")
	delete(doc, "$defs")
	b, err := json.Marshal(inlineRefs(doc, defs))
	if err != nil {
		panic("rpc: plan schema: " + err.Error())
	}
	return b
})

// planSchema returns a fresh copy of the plan's schema, self-contained.
func planSchema() *jsonschema.Schema {
	var s jsonschema.Schema
	if err := json.Unmarshal(planSchemaJSON(), &s); err != nil {
		panic("rpc: plan schema: " + err.Error())
	}
	return &s
}

// inlineRefs replaces every {"$ref": "#/$defs/X", …} by defs[X] (merged
// with the node's other keywords), recursively.
func inlineRefs(node any, defs map[string]any) any {
	switch n := node.(type) {
	case map[string]any:
		out := map[string]any{}
		if ref, ok := n["$ref"].(string); ok {
			if name, ok := strings.CutPrefix(ref, "#/$defs/"); ok {
				if def, ok := defs[name].(map[string]any); ok {
					for k, v := range inlineRefs(def, defs).(map[string]any) {
						out[k] = v
					}
				}
			}
		}
		for k, v := range n {
			if k == "$ref" {
				continue
			}
			out[k] = inlineRefs(v, defs)
		}
		return out
	case []any:
		out := make([]any, len(n))
		for i, v := range n {
			out[i] = inlineRefs(v, defs)
		}
		return out
	}
	return node
}
