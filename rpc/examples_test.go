package rpc

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	sjs "github.com/santhosh-tekuri/jsonschema/v6"
)

// compileSchema compiles a schema given as a Go value with santhosh-tekuri's
// validator.
func compileSchema(t *testing.T, c *sjs.Compiler, url string, schema any) *sjs.Schema {
	t.Helper()
	b, err := json.Marshal(schema)
	if err != nil {
		t.Fatal(err)
	}
	v, err := sjs.UnmarshalJSON(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource(url, v); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return s
}

// asJSONValue round-trips v through JSON (the validator wants decoded JSON).
func asJSONValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := sjs.UnmarshalJSON(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDocumentExamplesValidate: every registered method is in rpc.discover
// (TestDocumentListsEveryMethod checks the converse), the methods agents
// start from have examples, and every example's params validate against the
// method's params schema (and decode like a real call's), its result
// against the result schema.
func TestDocumentExamplesValidate(t *testing.T) {
	doc := NewService(nopEngine{}).Document()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var generic struct {
		Methods []struct {
			Name     string            `json:"name"`
			Examples []json.RawMessage `json:"examples"`
		} `json:"methods"`
	}
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	documented := map[string]int{}
	for _, m := range generic.Methods {
		documented[m.Name] = len(m.Examples)
	}
	for _, name := range MethodNames() {
		if _, ok := documented[name]; !ok {
			t.Errorf("method %s is not in rpc.discover", name)
		}
	}
	for _, name := range []string{MethodEngineInfo, MethodGenerate, MethodTokenize, MethodPlanValidate, MethodChat} {
		if documented[name] == 0 {
			t.Errorf("method %s has no example in rpc.discover", name)
		}
	}

	_, byName := methodTable()
	c := sjs.NewCompiler()
	n := 0
	for _, dm := range doc.Methods {
		m := byName[dm.Name]
		if len(dm.Examples) == 0 {
			continue
		}
		ps := compileSchema(t, c, fmt.Sprintf("mem://params-%d.json", n), m.paramsSchema)
		var rs *sjs.Schema
		if m.resultSchema == nil {
			rs = compileSchema(t, c, fmt.Sprintf("mem://result-%d.json", n), reflectSchema(m.Result))
		}
		n++
		for _, ex := range dm.Examples {
			obj := map[string]any{}
			for _, p := range ex.Params {
				obj[p.Name] = p.Value
			}
			if err := ps.Validate(asJSONValue(t, obj)); err != nil {
				t.Errorf("%s example %q: params do not validate: %v", dm.Name, ex.Name, err)
			}
			b, _ := json.Marshal(obj)
			if err := decodeParams(b, newParams(m), m.paramsSchema); err != nil {
				t.Errorf("%s example %q: params do not decode: %v", dm.Name, ex.Name, err)
			}
			if ex.Result != nil && rs != nil {
				if err := rs.Validate(asJSONValue(t, ex.Result.Value)); err != nil {
					t.Errorf("%s example %q: result does not validate: %v", dm.Name, ex.Name, err)
				}
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d methods with examples", n)
	}
}

// newParams returns a pointer to a new value of m's params type.
func newParams(m *Method) any { return reflect.New(m.Params).Interface() }
