package chat

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// tojsonFilterName is the name the source rewrite gives the tojson filter
// so that templates call tojsonFilter instead of the engine's built-in one.
const tojsonFilterName = "__chat_tojson"

// jsonOptions are the arguments of transformers' tojson filter:
//
//	def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
//	    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
//	                      separators=separators, sort_keys=sort_keys)
type jsonOptions struct {
	ensureASCII bool
	indent      *string // nil: no newlines
	itemSep     string
	keySep      string
	sortKeys    bool
}

// tojsonFilter implements transformers' tojson: Python's json.dumps with
// ensure_ascii=False by default, insertion-ordered keys, ", " / ": "
// separators ("," / ": " with indent) and no HTML escaping.
func tojsonFilter(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), fmt.Errorf("tojson: missing value")
	}
	params := []string{"ensure_ascii", "indent", "separators", "sort_keys"}
	if len(args)-1 > len(params) {
		return jinja.Undefined(), fmt.Errorf("tojson: takes at most %d arguments", len(params))
	}
	named := make(map[string]jinja.Value, len(params))
	for i, a := range args[1:] {
		named[params[i]] = a
	}
	for k, v := range kwargs {
		known := false
		for _, p := range params {
			known = known || p == k
		}
		if !known {
			return jinja.Undefined(), fmt.Errorf("tojson: unexpected keyword argument %q", k)
		}
		if _, dup := named[k]; dup {
			return jinja.Undefined(), fmt.Errorf("tojson: got multiple values for argument %q", k)
		}
		named[k] = v
	}

	var o jsonOptions
	if v, ok := named["ensure_ascii"]; ok {
		o.ensureASCII = v.IsTruthy()
	}
	if v, ok := named["sort_keys"]; ok {
		o.sortKeys = v.IsTruthy()
	}
	if v, ok := named["indent"]; ok && !v.IsNone() && !v.IsUndefined() {
		var s string
		switch {
		case v.IsString():
			s = v.AsString()
		case v.IsInt():
			s = strings.Repeat(" ", int(max(0, v.AsInt())))
		case v.IsBool():
			if v.AsBool() {
				s = " "
			}
		default:
			return jinja.Undefined(), fmt.Errorf("tojson: indent must be an int or a string")
		}
		o.indent = &s
	}
	o.itemSep, o.keySep = ", ", ": "
	if o.indent != nil {
		o.itemSep = ","
	}
	if v, ok := named["separators"]; ok && !v.IsNone() && !v.IsUndefined() {
		if !v.IsList() || v.AsList().Len() != 2 || !v.AsList().Items[0].IsString() || !v.AsList().Items[1].IsString() {
			return jinja.Undefined(), fmt.Errorf("tojson: separators must be a pair of strings")
		}
		o.itemSep = v.AsList().Items[0].AsString()
		o.keySep = v.AsList().Items[1].AsString()
	}

	var sb strings.Builder
	if err := encodePyJSON(&sb, args[0], &o, 0); err != nil {
		return jinja.Undefined(), err
	}
	return jinja.NewString(sb.String()), nil
}

func encodePyJSON(sb *strings.Builder, v jinja.Value, o *jsonOptions, level int) error {
	newline := func(level int) {
		if o.indent != nil {
			sb.WriteByte('\n')
			for range level {
				sb.WriteString(*o.indent)
			}
		}
	}
	switch {
	case v.IsNone():
		sb.WriteString("null")
	case v.IsBool():
		if v.AsBool() {
			sb.WriteString("true")
		} else {
			sb.WriteString("false")
		}
	case v.IsInt():
		sb.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		f := v.AsFloat()
		switch {
		case math.IsNaN(f):
			sb.WriteString("NaN")
		case math.IsInf(f, 1):
			sb.WriteString("Infinity")
		case math.IsInf(f, -1):
			sb.WriteString("-Infinity")
		default:
			sb.WriteString(pyFloatRepr(f))
		}
	case v.IsString():
		writePyJSONString(sb, v.AsString(), o.ensureASCII)
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			sb.WriteString("[]")
			return nil
		}
		sb.WriteByte('[')
		for i, item := range items {
			if i > 0 {
				sb.WriteString(o.itemSep)
			}
			newline(level + 1)
			if err := encodePyJSON(sb, item, o, level+1); err != nil {
				return err
			}
		}
		newline(level)
		sb.WriteByte(']')
	case v.IsDict():
		d := v.AsDict()
		keys := d.OrderedKeys()
		if len(keys) == 0 {
			sb.WriteString("{}")
			return nil
		}
		if o.sortKeys {
			sort.Strings(keys) // byte order of UTF-8 is code point order, as in Python
		}
		sb.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				sb.WriteString(o.itemSep)
			}
			newline(level + 1)
			writePyJSONString(sb, k, o.ensureASCII)
			sb.WriteString(o.keySep)
			val, _ := d.Get(k)
			if err := encodePyJSON(sb, val, o, level+1); err != nil {
				return err
			}
		}
		newline(level)
		sb.WriteByte('}')
	case v.IsUndefined():
		return fmt.Errorf("tojson: Object of type Undefined is not JSON serializable")
	default:
		return fmt.Errorf("tojson: Object of type %s is not JSON serializable", v.String())
	}
	return nil
}

// writePyJSONString writes s as Python's json module does: \" \\ \b \f \n
// \r \t, other control characters as \u00XX (lowercase hex), and with
// ensureASCII everything outside ' '..'~' as \uXXXX (surrogate pairs past
// U+FFFF). Invalid UTF-8 is written as U+FFFD.
func writePyJSONString(sb *strings.Builder, s string, ensureASCII bool) {
	const hex = "0123456789abcdef"
	u4 := func(r rune) {
		sb.WriteString(`\u`)
		sb.WriteByte(hex[r>>12&0xf])
		sb.WriteByte(hex[r>>8&0xf])
		sb.WriteByte(hex[r>>4&0xf])
		sb.WriteByte(hex[r&0xf])
	}
	sb.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch r {
		case '"':
			sb.WriteString(`\"`)
		case '\\':
			sb.WriteString(`\\`)
		case '\b':
			sb.WriteString(`\b`)
		case '\f':
			sb.WriteString(`\f`)
		case '\n':
			sb.WriteString(`\n`)
		case '\r':
			sb.WriteString(`\r`)
		case '\t':
			sb.WriteString(`\t`)
		default:
			switch {
			case r < 0x20:
				u4(r)
			case ensureASCII && r > '~':
				if r > 0xffff {
					r -= 0x10000
					u4(0xd800 | (r>>10)&0x3ff)
					u4(0xdc00 | r&0x3ff)
				} else {
					u4(r)
				}
			default:
				sb.WriteRune(r)
			}
		}
	}
	sb.WriteByte('"')
}

// pyFloatRepr is Python's repr(float): the shortest digits that round-trip,
// in positional notation with at least one fractional digit when the
// decimal exponent is in [-4, 16), otherwise as d[.ddd]e±XX.
func pyFloatRepr(f float64) string {
	if math.IsNaN(f) {
		return "nan"
	}
	if math.IsInf(f, 0) {
		if f > 0 {
			return "inf"
		}
		return "-inf"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // -d.ddde±XX
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1 // digits are d1.d2d3… × 10^exp = 0.d1d2… × 10^decpt
	if decpt <= -4 || decpt > 16 {
		s := sign + digits[:1]
		if len(digits) > 1 {
			s += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		if exp < 10 {
			es += "0"
		}
		return s + "e" + es + strconv.Itoa(exp)
	}
	switch {
	case decpt <= 0:
		return sign + "0." + strings.Repeat("0", -decpt) + digits
	case decpt >= len(digits):
		return sign + digits + strings.Repeat("0", decpt-len(digits)) + ".0"
	default:
		return sign + digits[:decpt] + "." + digits[decpt:]
	}
}
