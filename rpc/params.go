package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/invopop/jsonschema"
)

// decodeParams decodes a by-name params object into dst (a pointer to a
// struct) and returns a -32602 *Error naming the offending field when it
// does not fit:
//
//	invalid params: field "max_tokens": expected integer, got string
//	invalid params: unknown field "sampling.foo"
//	invalid params: missing required field "model"
//
// schema is dst's reflected JSON schema: it gives the required fields (those
// without omitempty) and the known fields at every level.
func decodeParams(raw json.RawMessage, dst any, schema *jsonschema.Schema) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage("{}")
	}
	switch raw[0] {
	case '{':
	case '[':
		// Positional params: accept only an empty array, for methods that
		// take no params.
		if bytes.Equal(bytes.Join(bytes.Fields(raw), nil), []byte("[]")) && len(schema.Required) == 0 {
			raw = json.RawMessage("{}")
			break
		}
		return InvalidParams("params must be an object (by-name), got array")
	default:
		return InvalidParams("params must be an object, got %s", jsonKind(raw))
	}

	var tree any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&tree); err != nil {
		return InvalidParams("%v", err)
	}
	// Unknown fields first (with their full path), then types, then
	// required fields.
	if err := checkFields(tree, schema, "", false); err != nil {
		return err
	}
	d = json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(dst); err != nil {
		return decodeError(err)
	}
	return checkFields(tree, schema, "", true)
}

// checkFields walks the decoded params against the schema and reports, with
// their dotted path, unknown fields or (required set) missing or null
// required fields. Type mismatches are left to encoding/json.
func checkFields(v any, s *jsonschema.Schema, path string, required bool) error {
	if s == nil {
		return nil
	}
	switch v := v.(type) {
	case map[string]any:
		if s.Properties == nil {
			return nil // a map or an "any" value: no known fields
		}
		if required {
			for _, name := range s.Required {
				if val, ok := v[name]; !ok || val == nil {
					return InvalidParams("missing required field %q", join(path, name))
				}
			}
		}
		names := make([]string, 0, len(v))
		for name := range v {
			names = append(names, name)
		}
		sort.Strings(names) // deterministic messages
		for _, name := range names {
			ps, ok := s.Properties.Get(name)
			if !ok {
				return InvalidParams("unknown field %q", join(path, name))
			}
			if err := checkFields(v[name], ps, join(path, name), required); err != nil {
				return err
			}
		}
	case []any:
		for i, el := range v {
			if err := checkFields(el, s.Items, path+"["+strconv.Itoa(i)+"]", required); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		got := te.Value
		if strings.HasPrefix(got, "bool") {
			got = "boolean"
		}
		if te.Field == "" {
			return InvalidParams("params must be %s, got %s", withArticle(jsonTypeName(te.Type)), got)
		}
		return InvalidParams("field %q: expected %s, got %s", te.Field, jsonTypeName(te.Type), got)
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return InvalidParams("unknown field %s", rest)
	}
	return InvalidParams("%s", strings.TrimPrefix(msg, "json: "))
}

func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return t.String()
}

func withArticle(s string) string {
	if s != "" && strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

func jsonKind(raw []byte) string {
	switch raw[0] {
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return "number"
}

// reflectSchema returns the JSON schema of t, self-contained (no $ref), as
// used for params checking and in the OpenRPC document.
func reflectSchema(t reflect.Type) *jsonschema.Schema {
	r := jsonschema.Reflector{DoNotReference: true, Anonymous: true, Mapper: schemaMapper}
	s := r.ReflectFromType(t)
	s.Version = ""
	return s
}
