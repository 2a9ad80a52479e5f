package kernels

import "fmt"

// DotFunc returns the dot product of n elements: w holds a weight row in the
// format's own type, a holds the activation row already converted to the
// format's VecDotType. Implementations must reduce in a fixed order that does
// not depend on anything but n: determinism rests on it.
type DotFunc func(n int, w, a []byte) float32

// QuantizeFunc converts len(src) floats (a whole number of blocks) into dst.
type QuantizeFunc func(dst []byte, src []float32)

// DequantizeFunc expands whole blocks of src into len(dst) floats.
type DequantizeFunc func(dst []float32, src []byte)

// Format describes one block format: how to make it, read it, and multiply it.
type Format struct {
	Type Type
	// VecDotType is the type activations are converted to before a dot
	// product with a row of this type (ggml's vec_dot_type pairing, so that
	// results track llama.cpp's).
	VecDotType Type
	Quantize   QuantizeFunc   // reference quantizer (llama.cpp's *_ref path)
	Dequantize DequantizeFunc // exact dequantizer
	Dot        DotFunc        // pure-Go dot product against VecDotType
}

var formats = map[Type]*Format{}

// registerFormat is called from init functions of the per-format files.
func registerFormat(f Format) {
	if _, dup := formats[f.Type]; dup {
		panic("kernels: format registered twice: " + f.Type.String())
	}
	ff := f
	formats[f.Type] = &ff
}

// FormatOf returns the registered format of t.
func FormatOf(t Type) (*Format, error) {
	f, ok := formats[t]
	if !ok {
		return nil, fmt.Errorf("kernels: no kernels for tensor type %s", t)
	}
	return f, nil
}
