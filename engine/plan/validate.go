package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// FieldError is one problem with a plan: the JSON pointer (RFC 6901) of the
// field at fault ("" for the whole document) and what is wrong with it.
type FieldError struct {
	Pointer string `json:"pointer"`
	Message string `json:"message"`
}

func (e FieldError) String() string {
	p := e.Pointer
	if p == "" {
		p = "(plan)"
	}
	return p + ": " + e.Message
}

// FieldErrors is a list of FieldError usable as an error: Resolve returns one
// when the plan cannot be resolved for the model or host.
type FieldErrors []FieldError

func (es FieldErrors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.String()
	}
	return "plan: " + strings.Join(s, "; ")
}

// sortErrors orders errors by pointer then message and drops duplicates: the
// schema library reports them in varying order.
func sortErrors(es []FieldError) []FieldError {
	sort.Slice(es, func(i, j int) bool {
		if es[i].Pointer != es[j].Pointer {
			return es[i].Pointer < es[j].Pointer
		}
		return es[i].Message < es[j].Message
	})
	out := es[:0]
	for i, e := range es {
		if i == 0 || e != es[i-1] {
			out = append(out, e)
		}
	}
	return out
}

// Pointer builds a JSON pointer from unescaped tokens: Pointer("a", "b/c") is
// "/a/b~1c".
func Pointer(tokens ...string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		b.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return b.String()
}

// Validate parses a plan document, checks it against the schema and the rules
// that do not depend on the host or model, and returns the plan. Problems
// with the document are returned as FieldErrors (sorted by pointer, then
// message) with a nil plan; the error is only for failures of the validator
// itself. Host rules are in Plan.Check, model rules in Resolve.
func Validate(raw []byte) (*Plan, []FieldError, error) {
	sch, err := compiled()
	if err != nil {
		return nil, nil, err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, []FieldError{{Pointer: "", Message: jsonSyntaxMessage(raw, err)}}, nil
	}
	if err := sch.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			return nil, nil, err
		}
		var es []FieldError
		collect(ve, &es)
		if len(es) == 0 { // cannot happen, but never report "invalid" without a reason
			es = append(es, FieldError{Pointer: "", Message: ve.Error()})
		}
		return nil, sortErrors(es), nil
	}
	var p Plan
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		// The schema accepts numbers Go cannot hold in the field's type,
		// e.g. 2.0 or 1e3 for an integer, or a seed above 2^64.
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			ptr := ""
			if te.Field != "" {
				ptr = Pointer(strings.Split(te.Field, ".")...)
			}
			return nil, []FieldError{{Pointer: ptr, Message: fmt.Sprintf("got %s, want %s", te.Value, goTypeName(te.Type.String()))}}, nil
		}
		return nil, []FieldError{{Pointer: "", Message: err.Error()}}, nil
	}
	if es := p.rules(); len(es) > 0 {
		return nil, es, nil
	}
	return &p, nil, nil
}

func goTypeName(t string) string {
	switch t {
	case "uint64":
		return "an integer from 0 to 2^64-1 (no fraction or exponent)"
	case "int", "int64":
		return "a 64-bit integer (no fraction or exponent)"
	}
	return t
}

func jsonSyntaxMessage(raw []byte, err error) string {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
	case len(bytes.TrimSpace(raw)) == 0:
		return "invalid JSON: empty document"
	}
	return "invalid JSON: " + err.Error()
}

var printer = message.NewPrinter(language.English)

// collect flattens the validator's error tree into leaf FieldErrors.
func collect(ve *jsonschema.ValidationError, out *[]FieldError) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collect(c, out)
		}
		return
	}
	loc := ve.InstanceLocation
	switch k := ve.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		for _, name := range k.Properties {
			*out = append(*out, FieldError{Pointer: Pointer(append(append([]string{}, loc...), name)...), Message: "unknown field"})
		}
	case *kind.Required:
		for _, name := range k.Missing {
			*out = append(*out, FieldError{Pointer: Pointer(append(append([]string{}, loc...), name)...), Message: "missing required field"})
		}
	default:
		*out = append(*out, FieldError{Pointer: Pointer(loc...), Message: ve.ErrorKind.LocalizedString(printer)})
	}
}

// rules are the checks that need neither host nor model and that a JSON
// Schema cannot express.
func (p *Plan) rules() []FieldError {
	var es []FieldError
	if q := p.Quantization; q != nil {
		for k := range q.Overrides {
			if _, err := path.Match(k, ""); err != nil {
				es = append(es, FieldError{Pointer: Pointer("quantization", "overrides", k), Message: "malformed glob pattern (path.Match syntax: * ? [...] \\)"})
			}
		}
	}
	if s := p.Scheduler; s != nil && s.MaxBatch != nil && *s.MaxBatch > 1 && (s.Mode == nil || *s.Mode == ModeSimple) {
		es = append(es, FieldError{Pointer: "/scheduler/max_batch", Message: fmt.Sprintf("max_batch %d needs scheduler.mode batching: simple mode runs one request at a time", *s.MaxBatch)})
	}
	if l := p.Limits; l != nil && l.MaxTokens != nil && l.MaxContext != nil && *l.MaxTokens > *l.MaxContext {
		es = append(es, FieldError{Pointer: "/limits/max_tokens", Message: fmt.Sprintf("max_tokens %d exceeds max_context %d", *l.MaxTokens, *l.MaxContext)})
	}
	return sortErrors(es)
}

// Check validates a plan built in Go (or decoded elsewhere) against the
// schema and every rule Validate applies, then against the host: threads at
// most env.UsableCPUs (when known), backend cpu-avx2 only with AVX2, and
// max_watts only where power can be capped unless enforcement is
// best_effort. The result is sorted by pointer, then message.
func (p *Plan) Check(env Env) []FieldError {
	raw, err := json.Marshal(p)
	if err != nil {
		return []FieldError{{Pointer: "", Message: err.Error()}}
	}
	_, es, err := Validate(raw)
	if err != nil {
		return []FieldError{{Pointer: "", Message: err.Error()}}
	}
	if p.Threads != nil && env.UsableCPUs > 0 && *p.Threads > env.UsableCPUs {
		es = append(es, FieldError{Pointer: "/threads", Message: fmt.Sprintf("%d threads requested but only %d CPUs are usable by the engine", *p.Threads, env.UsableCPUs)})
	}
	if p.Backend != nil && *p.Backend == BackendAVX2 && !env.HasAVX2 {
		es = append(es, FieldError{Pointer: "/backend", Message: "backend cpu-avx2 requested but this CPU has no AVX2 (use cpu-generic)"})
	}
	if l := p.Limits; l != nil && l.MaxWatts != nil && *l.MaxWatts > 0 && !env.CanCapPower {
		if l.Enforcement == nil || *l.Enforcement == EnforceStrict {
			es = append(es, FieldError{Pointer: "/limits/max_watts", Message: fmt.Sprintf("max_watts %g cannot be enforced on this host: %s (set limits.enforcement to best_effort to run uncapped)", *l.MaxWatts, capReason(env))})
		}
	}
	return sortErrors(es)
}

func capReason(env Env) string {
	if env.CapReason != "" {
		return env.CapReason
	}
	return "power capping unavailable"
}
