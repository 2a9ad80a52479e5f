package plan

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"strconv"
)

// Change is one difference between two plans: the JSON pointer of a leaf
// field and its old and new values (nil when absent on that side). Numbers
// are json.Number, keeping the document's spelling.
type Change struct {
	Pointer string `json:"pointer"`
	Old     any    `json:"old"`
	New     any    `json:"new"`
}

// Diff lists the fields that differ between a and b, sorted by pointer.
// Objects are compared field by field (a missing object counts as empty), so
// a plan that adds limits.max_watts shows as one change at
// /limits/max_watts. A nil plan is the empty plan.
func Diff(a, b *Plan) []Change {
	if a == nil {
		a = &Plan{}
	}
	if b == nil {
		b = &Plan{}
	}
	return mustDiff(a, b)
}

// DiffResolved compares two resolved plans, tensor decisions included
// (arrays element by element: /tensors/3/target).
func DiffResolved(a, b *Resolved) []Change { return mustDiff(a, b) }

func mustDiff(a, b any) []Change {
	ta, erra := toTree(a)
	tb, errb := toTree(b)
	if erra != nil || errb != nil { // plans always marshal; keep the signature simple
		panic("plan: diff: " + errorString(erra, errb))
	}
	var out []Change
	diffTree("", ta, tb, &out)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pointer < out[j].Pointer })
	return out
}

func errorString(errs ...error) string {
	for _, e := range errs {
		if e != nil {
			return e.Error()
		}
	}
	return ""
}

func toTree(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var t any
	err = dec.Decode(&t)
	return t, err
}

func diffTree(ptr string, a, b any, out *[]Change) {
	ma, aObj := a.(map[string]any)
	mb, bObj := b.(map[string]any)
	if (aObj || a == nil) && (bObj || b == nil) && (aObj || bObj) {
		keys := map[string]bool{}
		for k := range ma {
			keys[k] = true
		}
		for k := range mb {
			keys[k] = true
		}
		for k := range keys {
			diffTree(ptr+Pointer(k), ma[k], mb[k], out)
		}
		return
	}
	la, aArr := a.([]any)
	lb, bArr := b.([]any)
	if aArr && bArr {
		for i := 0; i < max(len(la), len(lb)); i++ {
			var x, y any
			if i < len(la) {
				x = la[i]
			}
			if i < len(lb) {
				y = lb[i]
			}
			diffTree(ptr+"/"+strconv.Itoa(i), x, y, out)
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		*out = append(*out, Change{Pointer: ptr, Old: a, New: b})
	}
}
