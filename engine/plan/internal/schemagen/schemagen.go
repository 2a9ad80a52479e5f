// Package schemagen generates engine/plan's JSON Schema (plan.schema.json)
// from the plan package's Go types with invopop/jsonschema. It runs at
// `go generate` time and in plan's staleness test, never in the engine: the
// engine embeds the generated file.
package schemagen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/invopop/jsonschema"

	"github.com/weos/llm-engine/engine/plan"
)

// SchemaID is the $id of the generated schema.
const SchemaID = "https://github.com/weos/llm-engine/engine/plan/plan.schema.json"

const pkgPath = "github.com/weos/llm-engine/engine/plan"

// Generate returns the schema of plan.Plan, indented, ending in a newline.
// dir is the plan package's source directory: the field comments there
// become the schema's descriptions.
func Generate(dir string) ([]byte, error) {
	r := &jsonschema.Reflector{ExpandedStruct: true}
	// invopop keys comments by base + the walked directory: walk a scratch
	// reflector, then re-key what it found in dir itself to the package path.
	scratch := &jsonschema.Reflector{}
	const base = "schemagen.invalid"
	if err := scratch.AddGoComments(base, dir); err != nil {
		return nil, fmt.Errorf("schemagen: reading comments in %s: %w", dir, err)
	}
	prefix := path.Join(base, filepath.ToSlash(dir)) + "."
	r.CommentMap = map[string]string{}
	for k, v := range scratch.CommentMap {
		if rest, ok := strings.CutPrefix(k, prefix); ok && !strings.Contains(rest, "/") {
			r.CommentMap[pkgPath+"."+rest] = v
		}
	}
	if r.CommentMap[pkgPath+".Plan.Threads"] == "" {
		return nil, fmt.Errorf("schemagen: no field comments found in %s (is it engine/plan?)", dir)
	}

	s := r.Reflect(&plan.Plan{})
	s.ID = SchemaID
	s.Title = "llm-engine Execution Plan"

	version, ok := s.Properties.Get("version")
	if !ok {
		return nil, fmt.Errorf("schemagen: no version property")
	}
	version.Const = plan.FormatVersion

	q, ok := s.Definitions["Quantization"]
	if !ok {
		return nil, fmt.Errorf("schemagen: no Quantization definition")
	}
	ov, ok := q.Properties.Get("overrides")
	if !ok {
		return nil, fmt.Errorf("schemagen: no quantization.overrides property")
	}
	minLen, maxLen := uint64(1), uint64(256)
	ov.PropertyNames = &jsonschema.Schema{MinLength: &minLen, MaxLength: &maxLen}
	enum := []any{}
	for _, t := range plan.OverrideTypes() {
		enum = append(enum, t)
	}
	ov.AdditionalProperties = &jsonschema.Schema{Type: "string", Enum: enum}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
