package model

// Weight layout: an execution plan's weight_layout "x8" has every matrix
// product weight of a type with an x8 layout (Q8_0, Q4_K, Q6_K) repacked at
// load into groups of eight interleaved rows (kernels/x8.go), which the
// AVX2 kernels compute eight rows at a time. The repacked matrices live in
// one anonymous memory map, read-only once written; the source pages (the
// model file's or the quantization cache's map) are released as each matrix
// is done, so the process holds the weights once. Results are bit-identical
// to the file's layout: the layout changes which bytes sit where, never the
// arithmetic of a dot product.

import (
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

// LayoutInfo reports what the load did to the weights' layout.
type LayoutInfo struct {
	Layout   kernels.Layout // the layout asked for
	Matrices int            // matrices repacked
	Bytes    int64          // their size
	Duration time.Duration  // time spent repacking
}

// Layout reports the layout of the model's matrix weights.
func (m *Model) Layout() LayoutInfo { return m.layout }

// matmulMatrices lists the matrices the forward pass multiplies by (each
// once, even when two fields share their data: a tied output head is the
// token embedding).
func (m *Model) matmulMatrices() []*kernels.Matrix {
	var ms []*kernels.Matrix
	for i := range m.Layers {
		L := &m.Layers[i]
		ms = append(ms, &L.Wq, &L.Wk, &L.Wv, &L.Wo, &L.Gate, &L.Up, &L.Down)
	}
	return append(ms, &m.Output)
}

// repack moves the eligible matrices into LayoutX8 on the pool's threads.
// Sources mapped from one of files are dropped from the process's memory
// as they are done.
func (m *Model) repack(progress func(done, total int64), files []*gguf.File) error {
	start := time.Now()
	type job struct {
		src  kernels.Matrix
		dsts []*kernels.Matrix // fields sharing the source
		off  int
	}
	var jobs []*job
	bySrc := map[*byte]*job{}
	total := 0
	for _, w := range m.matmulMatrices() {
		if w.Layout != kernels.LayoutRows || !kernels.HasX8(w.Type) || w.Rows < 8 || len(w.Data) == 0 {
			continue
		}
		if err := m.backend.SupportsLayout(w.Type, kernels.LayoutX8); err != nil {
			return fmt.Errorf("model: weight layout x8: %w", err)
		}
		key := unsafe.SliceData(w.Data)
		if j, ok := bySrc[key]; ok && len(j.src.Data) == len(w.Data) {
			j.dsts = append(j.dsts, w)
			continue
		}
		j := &job{src: *w, dsts: []*kernels.Matrix{w}, off: total}
		total += (len(w.Data) + 63) &^ 63
		jobs = append(jobs, j)
		bySrc[key] = j
	}
	m.layout = LayoutInfo{Layout: kernels.LayoutX8}
	if len(jobs) == 0 {
		return nil
	}
	// The arena is aligned to 2 MiB and asks for transparent huge pages:
	// decoding streams every weight once per token, and with 4 KiB pages
	// that is a TLB miss every 4 KiB (some 200,000 per token for a 1B
	// model). Best effort: without THP the kernel uses small pages.
	const huge = 2 << 20
	mapping, err := unix.Mmap(-1, 0, total+huge, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("model: weight layout x8: mapping %d bytes: %w", total, err)
	}
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(mapping))) & (huge - 1))
	arena := mapping[skip : skip+total]
	_ = unix.Madvise(arena, unix.MADV_HUGEPAGE)
	var done int64
	if progress != nil {
		progress(0, int64(total))
	}
	for _, j := range jobs {
		dst := arena[j.off : j.off+len(j.src.Data)]
		groups := j.src.Rows / 8
		src := &j.src
		rb := src.RowBytes()
		// In chunks of about 4 MiB, each released from the process as soon
		// as it is repacked: the peak resident set stays near the weights'
		// size, not the weights plus the largest matrix.
		per := max(1, (4<<20)/(8*rb))
		for g0 := 0; g0 < groups; g0 += per {
			g1 := min(groups, g0+per)
			m.pool.Run(g1-g0, func(_, a, b int) { kernels.RepackX8Rows(dst, src, g0+a, g0+b) })
			releaseSource(src.Data[8*g0*rb:8*g1*rb], files)
			done += int64(8 * (g1 - g0) * rb)
			if progress != nil {
				progress(done, int64(total))
			}
		}
		copy(dst[groups*8*rb:], src.Data[groups*8*rb:])
		for _, d := range j.dsts {
			*d = kernels.Matrix{Type: src.Type, Rows: src.Rows, Cols: src.Cols, Data: dst[:len(dst):len(dst)], Layout: kernels.LayoutX8}
		}
		if unsafe.SliceData(m.TokEmb.Data) == unsafe.SliceData(src.Data) {
			m.TokEmb = *j.dsts[0] // tied: embed from the repacked copy
		}
		releaseSource(src.Data, files)
		m.layout.Matrices++
		m.layout.Bytes += int64(len(dst))
	}
	if err := unix.Mprotect(arena, unix.PROT_READ); err != nil {
		unix.Munmap(mapping)
		return fmt.Errorf("model: weight layout x8: %w", err)
	}
	m.arena = mapping
	m.layout.Duration = time.Since(start)
	return nil
}

// releaseSource drops the pages of a repacked source from the process:
// unmapped (MADV_DONTNEED) when a model file's map holds them, so that the
// weights are not counted twice in its resident set (the page cache keeps
// them); otherwise (a tensor converted in memory) left to releasePages.
func releaseSource(b []byte, files []*gguf.File) {
	for _, f := range files {
		if f.MapHolds(b) {
			ps := uintptr(os.Getpagesize())
			start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
			lo := (start + ps - 1) &^ (ps - 1)
			hi := (start + uintptr(len(b))) &^ (ps - 1)
			if hi > lo {
				_ = unix.Madvise(b[lo-start:hi-start], unix.MADV_DONTNEED)
			}
			return
		}
	}
	releasePages(b)
}
