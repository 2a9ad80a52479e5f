package progress

import (
	"bytes"
	"strings"
	"testing"
)

func TestLinesWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, "repacking", 1000)
	for d := int64(0); d <= 1000; d += 37 {
		b.Set(d, 1000)
	}
	b.Finish()
	b.Set(1000, 1000) // after Finish: nothing
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 11 || lines[0] != "repacking:   0% (0 B of 1000 B)" || lines[10] != "repacking: 100% (1000 B of 1000 B)" {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	if strings.Contains(buf.String(), "\r") {
		t.Fatal("carriage return in non-terminal output")
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{512: "512 B", 1536: "1.5 KiB", 12 << 20: "12.0 MiB", 2362232012: "2.20 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
