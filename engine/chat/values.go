package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// messageValue is the dict a template sees for m: role and content always,
// the other keys only when set, in a fixed order.
func messageValue(m *Message) (jinja.Value, error) {
	d := jinja.NewDict()
	dict := d.AsDict()
	dict.Set("role", jinja.NewString(m.Role))
	dict.Set("content", jinja.NewString(m.Content))
	if m.ReasoningContent != "" {
		dict.Set("reasoning_content", jinja.NewString(m.ReasoningContent))
	}
	if len(m.ToolCalls) > 0 {
		calls := make([]jinja.Value, len(m.ToolCalls))
		for i := range m.ToolCalls {
			c, err := toolCallValue(&m.ToolCalls[i])
			if err != nil {
				return jinja.Undefined(), fmt.Errorf("tool call %d: %w", i, err)
			}
			calls[i] = c
		}
		dict.Set("tool_calls", jinja.NewList(calls))
	}
	if m.ToolCallID != "" {
		dict.Set("tool_call_id", jinja.NewString(m.ToolCallID))
	}
	if m.Name != "" {
		dict.Set("name", jinja.NewString(m.Name))
	}
	return d, nil
}

func messagesValue(msgs []Message) (jinja.Value, error) {
	items := make([]jinja.Value, len(msgs))
	for i := range msgs {
		v, err := messageValue(&msgs[i])
		if err != nil {
			return jinja.Undefined(), fmt.Errorf("message %d: %w", i, err)
		}
		items[i] = v
	}
	return jinja.NewList(items), nil
}

func toolCallValue(tc *ToolCall) (jinja.Value, error) {
	d := jinja.NewDict()
	dict := d.AsDict()
	if tc.ID != "" {
		dict.Set("id", jinja.NewString(tc.ID))
	}
	if tc.Type != "" {
		dict.Set("type", jinja.NewString(tc.Type))
	}
	f := jinja.NewDict()
	f.AsDict().Set("name", jinja.NewString(tc.Function.Name))
	args, err := toValue(tc.Function.Arguments)
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("arguments: %w", err)
	}
	f.AsDict().Set("arguments", args)
	dict.Set("function", f)
	return d, nil
}

// toValue converts a Go value to a template value. json.RawMessage and
// structs (through encoding/json) keep their key order; Go maps get sorted
// keys.
func toValue(v any) (jinja.Value, error) {
	switch x := v.(type) {
	case nil:
		return jinja.None(), nil
	case jinja.Value:
		return x, nil
	case bool:
		return jinja.NewBool(x), nil
	case string:
		return jinja.NewString(x), nil
	case int:
		return jinja.NewInt(int64(x)), nil
	case int8:
		return jinja.NewInt(int64(x)), nil
	case int16:
		return jinja.NewInt(int64(x)), nil
	case int32:
		return jinja.NewInt(int64(x)), nil
	case int64:
		return jinja.NewInt(x), nil
	case uint8:
		return jinja.NewInt(int64(x)), nil
	case uint16:
		return jinja.NewInt(int64(x)), nil
	case uint32:
		return jinja.NewInt(int64(x)), nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return jinja.NewFloat(float64(x)), nil
		}
		return jinja.NewInt(int64(x)), nil
	case uint64:
		if x > math.MaxInt64 {
			return jinja.NewFloat(float64(x)), nil
		}
		return jinja.NewInt(int64(x)), nil
	case float32:
		return jinja.NewFloat(float64(x)), nil
	case float64:
		return jinja.NewFloat(x), nil
	case json.Number:
		return numberValue(string(x))
	case json.RawMessage:
		return decodeJSON(x)
	case Message:
		return messageValue(&x)
	case *Message:
		if x == nil {
			return jinja.None(), nil
		}
		return messageValue(x)
	case []Message:
		return messagesValue(x)
	case ToolCall:
		return toolCallValue(&x)
	case []any:
		items := make([]jinja.Value, len(x))
		for i, e := range x {
			val, err := toValue(e)
			if err != nil {
				return jinja.Undefined(), err
			}
			items[i] = val
		}
		return jinja.NewList(items), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		d := jinja.NewDict()
		for _, k := range keys {
			val, err := toValue(x[k])
			if err != nil {
				return jinja.Undefined(), err
			}
			d.AsDict().Set(k, val)
		}
		return d, nil
	}

	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return jinja.None(), nil
		}
		return toValue(rv.Elem().Interface())
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return jinja.None(), nil
		}
		items := make([]jinja.Value, rv.Len())
		for i := range rv.Len() {
			val, err := toValue(rv.Index(i).Interface())
			if err != nil {
				return jinja.Undefined(), err
			}
			items[i] = val
		}
		return jinja.NewList(items), nil
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			if rv.IsNil() {
				return jinja.None(), nil
			}
			keys := make([]string, 0, rv.Len())
			for _, k := range rv.MapKeys() {
				keys = append(keys, k.String())
			}
			sort.Strings(keys)
			d := jinja.NewDict()
			for _, k := range keys {
				val, err := toValue(rv.MapIndex(reflect.ValueOf(k).Convert(rv.Type().Key())).Interface())
				if err != nil {
					return jinja.Undefined(), err
				}
				d.AsDict().Set(k, val)
			}
			return d, nil
		}
	case reflect.String:
		return jinja.NewString(rv.String()), nil
	case reflect.Bool:
		return jinja.NewBool(rv.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return jinja.NewInt(rv.Int()), nil
	case reflect.Float32, reflect.Float64:
		return jinja.NewFloat(rv.Float()), nil
	}

	// Anything else (structs, maps with other keys, named numeric types
	// with a MarshalJSON, …) goes through encoding/json, which keeps struct
	// field order.
	b, err := json.Marshal(v)
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("cannot convert %T: %w", v, err)
	}
	return decodeJSON(b)
}

// decodeJSON decodes one JSON value into template values, keeping object
// key order (Python's json.loads keeps it too). Integers become ints and
// numbers with a fraction or exponent floats, as in Python.
func decodeJSON(b []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeJSONValue(dec)
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return jinja.Undefined(), fmt.Errorf("invalid JSON: data after the top-level value")
	}
	return v, nil
}

func decodeJSONValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '[':
			items := []jinja.Value{}
			for dec.More() {
				v, err := decodeJSONValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return jinja.NewList(items), nil
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				k, ok := kt.(string)
				if !ok {
					return jinja.Undefined(), fmt.Errorf("object key %v is not a string", kt)
				}
				v, err := decodeJSONValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				d.AsDict().Set(k, v)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return d, nil
		}
		return jinja.Undefined(), fmt.Errorf("unexpected %v", t)
	case string:
		return jinja.NewString(t), nil
	case bool:
		return jinja.NewBool(t), nil
	case nil:
		return jinja.None(), nil
	case json.Number:
		return numberValue(string(t))
	}
	return jinja.Undefined(), fmt.Errorf("unexpected token %v", tok)
}

func numberValue(s string) (jinja.Value, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return jinja.NewInt(i), nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("invalid number %q", s)
	}
	return jinja.NewFloat(f), nil
}

// maxRange is Jinja2's sandbox limit on range() (MAX_RANGE).
const maxRange = 100000

// sandboxRange is Python's range() under Jinja2's sandbox, which
// transformers renders in: integer arguments, at most 100000 items.
func sandboxRange(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if len(kwargs) > 0 {
		return jinja.Undefined(), fmt.Errorf("range() takes no keyword arguments")
	}
	n := make([]int64, len(args))
	for i, a := range args {
		switch {
		case a.IsInt():
			n[i] = a.AsInt()
		case a.IsBool():
			if a.AsBool() {
				n[i] = 1
			}
		default:
			return jinja.Undefined(), fmt.Errorf("range(): %s object cannot be interpreted as an integer", a.String())
		}
	}
	start, stop, step := int64(0), int64(0), int64(1)
	switch len(n) {
	case 1:
		stop = n[0]
	case 2:
		start, stop = n[0], n[1]
	case 3:
		start, stop, step = n[0], n[1], n[2]
	default:
		return jinja.Undefined(), fmt.Errorf("range expected 1 to 3 arguments, got %d", len(n))
	}
	if step == 0 {
		return jinja.Undefined(), fmt.Errorf("range() arg 3 must not be zero")
	}
	var count float64 // float: no overflow on extreme arguments
	if step > 0 && stop > start {
		count = math.Ceil((float64(stop) - float64(start)) / float64(step))
	} else if step < 0 && stop < start {
		count = math.Ceil((float64(start) - float64(stop)) / -float64(step))
	}
	if count > maxRange {
		return jinja.Undefined(), fmt.Errorf("Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", maxRange)
	}
	items := make([]jinja.Value, 0, int(count))
	for i, v := 0, start; i < int(count); i, v = i+1, v+step {
		items = append(items, jinja.NewInt(v))
	}
	return jinja.NewList(items), nil
}

// printFilter is what `{{ expr }}` prints (the source rewrite routes every
// output through it): Python's str() of the value, "" for undefined.
func printFilter(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.NewString(""), nil
	}
	if args[0].IsString() {
		return args[0], nil
	}
	return jinja.NewString(pyStr(args[0])), nil
}

// pyStr is Python's str() of a template value (Jinja2 prints undefined as
// "").
func pyStr(v jinja.Value) string {
	switch {
	case v.IsString():
		return v.AsString()
	case v.IsUndefined(), v.IsCallable():
		return ""
	}
	var sb strings.Builder
	writePyRepr(&sb, v)
	return sb.String()
}

// writePyRepr writes Python's repr() of v.
func writePyRepr(sb *strings.Builder, v jinja.Value) {
	switch {
	case v.IsUndefined(), v.IsCallable():
		sb.WriteString("Undefined")
	case v.IsNone():
		sb.WriteString("None")
	case v.IsBool():
		if v.AsBool() {
			sb.WriteString("True")
		} else {
			sb.WriteString("False")
		}
	case v.IsInt():
		sb.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		sb.WriteString(pyFloatRepr(v.AsFloat()))
	case v.IsString():
		writePyStringRepr(sb, v.AsString())
	case v.IsList():
		sb.WriteByte('[')
		for i, item := range v.AsList().Items {
			if i > 0 {
				sb.WriteString(", ")
			}
			writePyRepr(sb, item)
		}
		sb.WriteByte(']')
	case v.IsDict():
		d := v.AsDict()
		sb.WriteByte('{')
		for i, k := range d.Keys {
			if i > 0 {
				sb.WriteString(", ")
			}
			writePyStringRepr(sb, k)
			sb.WriteString(": ")
			writePyRepr(sb, d.Data[k])
		}
		sb.WriteByte('}')
	}
}

// writePyStringRepr writes Python's repr() of a str: single quotes unless
// the string has ' and no ", backslash escapes for the quote, \\, \t, \n,
// \r and non-printable characters.
func writePyStringRepr(sb *strings.Builder, s string) {
	q := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		q = '"'
	}
	sb.WriteByte(q)
	for _, r := range s {
		switch {
		case r == rune(q) || r == '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r == '\t':
			sb.WriteString(`\t`)
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == ' ' || r != utf8.RuneError && unicode.IsPrint(r):
			sb.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(sb, `\x%02x`, r)
		case r < 0x10000:
			fmt.Fprintf(sb, `\u%04x`, r)
		default:
			fmt.Fprintf(sb, `\U%08x`, r)
		}
	}
	sb.WriteByte(q)
}
