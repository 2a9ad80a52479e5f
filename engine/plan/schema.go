package plan

import (
	"bytes"
	_ "embed"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed plan.schema.json
var schemaJSON []byte

// Schema returns the plan's JSON Schema (draft 2020-12), generated from the
// Go types by `go generate` (see internal/schemagen). The caller may
// modify the returned copy freely.
func Schema() []byte { return bytes.Clone(schemaJSON) }

const schemaURL = "https://github.com/weos/llm-engine/engine/plan/plan.schema.json"

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("plan: embedded schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("plan: embedded schema: %w", err)
	}
	s, err := c.Compile(schemaURL)
	if err != nil {
		return nil, fmt.Errorf("plan: embedded schema: %w", err)
	}
	return s, nil
})
