package kernels

import (
	"math"
	"testing"
)

// Every binary16 value survives a round trip through float32.
func TestFP16RoundTripAll(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := FP16ToFP32(h)
		if f != f { // NaN
			if FP32ToFP16(f)&0x7c00 != 0x7c00 {
				t.Fatalf("NaN %#x did not stay NaN", h)
			}
			continue
		}
		if got := FP32ToFP16(f); got != h {
			t.Fatalf("%#x -> %v -> %#x", h, f, got)
		}
	}
}

// Values halfway between two binary16 numbers round to the even one.
func TestFP16RoundsToNearestEven(t *testing.T) {
	cases := []struct {
		f    float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3c00},           // halfway between 1 and 1+2^-10: even is 1
		{1 + 3.0/2048, 0x3c02},           // halfway between 1+2^-10 and 1+2^-9: even is 0x3c02
		{65520, 0x7c00},                  // rounds up to infinity
		{float32(math.Ldexp(1, -25)), 0}, // half the smallest subnormal: ties to even (0)
		{float32(math.Ldexp(1.5, -25)), 1},
	}
	for _, c := range cases {
		if got := FP32ToFP16(c.f); got != c.want {
			t.Errorf("FP32ToFP16(%v) = %#x, want %#x", c.f, got, c.want)
		}
	}
}

func TestBF16(t *testing.T) {
	if got := FP32ToBF16(1.00390625); got != 0x3f80 { // halfway, even is 1.0
		t.Errorf("got %#x", got)
	}
	if BF16ToFP32(0x3f80) != 1 {
		t.Error("bf16 1.0")
	}
}
