package model

// Load-time conversion of weight tensors (quantization as a parameter of
// the execution plan, not a property of the file).
//
// Options.Types names the type each tensor is computed in. A tensor whose
// target is its type in the file is used from the memory map; any other is
// converted row by row: each row is expanded to float32 with the source
// format's exact dequantizer and quantized with the target format's
// reference quantizer (llama.cpp's *_ref path, byte for byte), so a model
// quantized at load holds the same bytes llama-quantize (without imatrix)
// writes. Rows are split across the pool's workers; every row is converted
// by one worker on its own, so the bytes do not depend on the thread count.
//
// LoadCached keeps the converted tensors in a cache directory as a GGUF
// file, keyed by the source file's sha256, the conversions asked for and
// QuantCacheVersion, written atomically (renameio) while it is computed,
// and memory-mapped by later loads. Each tensor carries a CRC-32C checked
// on every load: an entry that does not parse, does not match, or fails a
// checksum is rebuilt.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

// QuantCacheVersion is the layout and content version of cache entries.
// Bump it whenever a conversion could produce different bytes (a quantizer
// fix) or the entry layout changes: old entries are then never used.
const QuantCacheVersion = 1

// Metadata keys of a cache entry. The CRC array is the first key so that
// its position in the file is known before the tensor data is written (it
// is written as zeros, then filled in once the data has streamed out).
const (
	cacheKeyCRC     = "llm_engine.quant_cache.crc32c"
	cacheKeyVersion = "llm_engine.quant_cache.version"
	cacheKeySource  = "llm_engine.quant_cache.source_sha256"
	cacheKeyTypes   = "llm_engine.quant_cache.types_sha256"
	cacheKeyPath    = "llm_engine.quant_cache.source_path"
)

// QuantInfo reports what load-time conversion did.
type QuantInfo struct {
	Tensors     int           // tensors converted from their type in the file
	Bytes       int64         // their size in the target types
	SourceBytes int64         // their size in the file
	Duration    time.Duration // time spent converting (0 when mapped from the cache)
	CachePath   string        // the cache entry holding them ("" when converted in memory)
	CacheHit    bool          // the entry existed and passed its checks
	Rebuilt     string        // why an existing entry was discarded and rebuilt
	CacheError  string        // why the cache could not be used (the tensors were then converted in memory)
}

// Quantization reports the load-time conversion of the model's tensors.
func (m *Model) Quantization() QuantInfo { return m.quant }

// Close releases the memory of the repacked matrices (weight layout x8)
// and the cache entry the model's converted tensors are mapped from
// (LoadCached). The model must not be used afterwards. Close does not
// close the model file given to Load. It is idempotent, and a no-op for
// models with neither.
func (m *Model) Close() error {
	var err error
	if m.arena != nil {
		err = unix.Munmap(m.arena)
		m.arena = nil
	}
	if m.cache == nil {
		return err
	}
	c := m.cache
	m.cache = nil
	if cerr := c.Close(); cerr != nil {
		return cerr
	}
	return err
}

type convTensor struct {
	typ  kernels.Type
	data []byte
}

// converted is the outcome of the conversions of one load.
type converted struct {
	tensors map[string]convTensor
	info    QuantInfo
	file    *gguf.File // the cache entry the tensors alias, if any
}

// convJob is one tensor to convert.
type convJob struct {
	ti             *gguf.TensorInfo
	target         kernels.Type
	rows, cols     int
	srcRow, dstRow int // bytes per row
}

func (j *convJob) srcBytes() int64 { return int64(j.rows) * int64(j.srcRow) }
func (j *convJob) dstBytes() int64 { return int64(j.rows) * int64(j.dstRow) }

// planJobs lists, in file order, the tensors opts.Types converts, and
// checks that each conversion can be done.
func planJobs(f *gguf.File, o *Options) ([]convJob, error) {
	names := make([]string, 0, len(o.Types))
	for n := range o.Types {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if _, ok := f.Tensor(n); !ok {
			return nil, fmt.Errorf("model: Options.Types names tensor %s, which the file does not have", n)
		}
	}
	var jobs []convJob
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		target, ok := o.Types[ti.Name]
		if !ok || target == ti.Type {
			continue
		}
		src, err := kernels.FormatOf(ti.Type)
		if err != nil || src.Dequantize == nil {
			return nil, fmt.Errorf("model: tensor %s: cannot read %s tensors to convert them", ti.Name, ti.Type)
		}
		dst, err := kernels.FormatOf(target)
		if err != nil || dst.Quantize == nil {
			return nil, fmt.Errorf("model: tensor %s: cannot convert to %s: no quantizer for it", ti.Name, target)
		}
		if ti.Type.BlockSize() > 1 && target.BlockSize() > 1 && !o.AllowRequantize {
			return nil, fmt.Errorf("model: tensor %s is %s in the file: converting it to %s would quantize it twice (requantization not allowed)", ti.Name, ti.Type, target)
		}
		if len(ti.Dims) == 0 || ti.Dims[0] <= 0 {
			return nil, fmt.Errorf("model: tensor %s has shape %v: nothing to convert", ti.Name, ti.Dims)
		}
		cols := int(ti.Dims[0])
		rows := int(ti.NumElements() / ti.Dims[0])
		srcRow, err := ti.Type.RowSize(cols)
		if err != nil {
			return nil, fmt.Errorf("model: tensor %s: %w", ti.Name, err)
		}
		dstRow, err := target.RowSize(cols)
		if err != nil {
			return nil, fmt.Errorf("model: tensor %s: cannot convert to %s: %w", ti.Name, target, err)
		}
		jobs = append(jobs, convJob{ti: ti, target: target, rows: rows, cols: cols, srcRow: srcRow, dstRow: dstRow})
	}
	return jobs, nil
}

// convertTensors does what opts asks for in memory (or returns what
// LoadCached prepared).
func convertTensors(f *gguf.File, o *Options) (*converted, error) {
	if o.conv != nil {
		return o.conv, nil
	}
	jobs, err := planJobs(f, o)
	if err != nil {
		return nil, err
	}
	c := &converted{}
	if len(jobs) == 0 {
		return c, nil
	}
	return c, c.inMemory(f, jobs, o)
}

// inMemory converts jobs into heap buffers.
func (c *converted) inMemory(f *gguf.File, jobs []convJob, o *Options) error {
	start := time.Now()
	cv := newRowConverter(o.Pool, jobs)
	pr := newProgress(jobs, o.Progress)
	c.tensors = make(map[string]convTensor, len(jobs))
	for i := range jobs {
		j := &jobs[i]
		dst := make([]byte, j.dstBytes())
		src := f.TensorData(j.ti)
		for r0 := 0; r0 < j.rows; {
			r1 := min(j.rows, r0+cv.chunkRows(j))
			cv.convert(j, src, dst[r0*j.dstRow:r1*j.dstRow], r0, r1)
			pr.add(int64(r1-r0) * int64(j.srcRow))
			r0 = r1
		}
		releasePages(src)
		c.tensors[j.ti.Name] = convTensor{typ: j.target, data: dst}
	}
	pr.finish()
	c.info = jobsInfo(jobs)
	c.info.Duration = time.Since(start)
	return nil
}

func jobsInfo(jobs []convJob) QuantInfo {
	var qi QuantInfo
	for i := range jobs {
		qi.Tensors++
		qi.Bytes += jobs[i].dstBytes()
		qi.SourceBytes += jobs[i].srcBytes()
	}
	return qi
}

// rowConverter converts rows on the pool: worker w expands a row into its
// scratch row and quantizes it.
type rowConverter struct {
	pool    *kernels.Pool
	scratch [][]float32

	// the chunk being converted
	deq      kernels.DequantizeFunc
	quant    kernels.QuantizeFunc
	src, dst []byte
	j        *convJob
	r0       int
	fn       func(worker, start, end int)
}

func newRowConverter(p *kernels.Pool, jobs []convJob) *rowConverter {
	cols := 0
	for i := range jobs {
		cols = max(cols, jobs[i].cols)
	}
	c := &rowConverter{pool: p, scratch: make([][]float32, p.Threads())}
	for i := range c.scratch {
		c.scratch[i] = make([]float32, cols)
	}
	c.fn = c.rows
	return c
}

// chunkRows is how many rows are converted between two progress reports
// (and, when streaming, two writes): about 4 MiB of source data.
func (c *rowConverter) chunkRows(j *convJob) int {
	return max(1, min(j.rows, (4<<20)/j.srcRow))
}

// convert converts rows [r0,r1) of job j: src is the whole source tensor,
// dst receives the converted rows from its start.
func (c *rowConverter) convert(j *convJob, src, dst []byte, r0, r1 int) {
	sf, _ := kernels.FormatOf(j.ti.Type)
	df, _ := kernels.FormatOf(j.target)
	c.deq, c.quant, c.src, c.dst, c.j, c.r0 = sf.Dequantize, df.Quantize, src, dst, j, r0
	c.pool.Run(r1-r0, c.fn)
	c.src, c.dst, c.j = nil, nil, nil
}

func (c *rowConverter) rows(worker, start, end int) {
	j := c.j
	x := c.scratch[worker][:j.cols]
	for i := start; i < end; i++ {
		r := c.r0 + i
		c.deq(x, c.src[r*j.srcRow:(r+1)*j.srcRow])
		c.quant(c.dst[i*j.dstRow:(i+1)*j.dstRow], x)
	}
}

// progress reports source bytes converted.
type progress struct {
	fn          func(done, total int64)
	done, total int64
}

func newProgress(jobs []convJob, fn func(done, total int64)) *progress {
	p := &progress{fn: fn}
	for i := range jobs {
		p.total += jobs[i].srcBytes()
	}
	if fn != nil {
		fn(0, p.total)
	}
	return p
}

func (p *progress) add(n int64) {
	p.done += n
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
}

func (p *progress) finish() {
	if p.fn != nil && p.done != p.total {
		p.fn(p.total, p.total)
	}
}

// releasePages asks the kernel to drop the resident pages of a converted
// source tensor (a file map: they are re-read if ever touched again; heap
// memory without swap: nothing happens), so that converting a large file
// does not leave the whole source counted in the process's RSS.
func releasePages(b []byte) {
	if len(b) == 0 {
		return
	}
	ps := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := (start + ps - 1) &^ (ps - 1)
	hi := (start + uintptr(len(b))) &^ (ps - 1)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(b[lo-start:hi-start], unix.MADV_PAGEOUT) // best effort
}

// ---------------------------------------------------------------------------
// The cache

// LoadCached is Load for the model file at path (f is that file, open),
// with the tensors opts.Types converts kept in cacheDir: a valid entry is
// memory-mapped, otherwise the conversion runs (reporting opts.Progress)
// while the entry is written, atomically, and then mapped. Model.Close
// releases the entry's map; Model.Quantization tells what happened. Loads
// that convert nothing, or an empty cacheDir, are plain Loads. When the
// cache cannot be written the conversion is kept in memory instead
// (QuantInfo.CacheError says why).
func LoadCached(f *gguf.File, path, cacheDir string, opts Options) (*Model, error) {
	if opts.Pool == nil {
		return nil, errors.New("model: Options.Pool is required")
	}
	if _, err := readConfig(f); err != nil {
		return nil, err
	}
	jobs, err := planJobs(f, &opts)
	if err != nil {
		return nil, err
	}
	if len(jobs) == 0 || cacheDir == "" {
		return Load(f, opts)
	}
	c, err := cachedConversions(f, path, cacheDir, jobs, &opts)
	if err != nil {
		return nil, err
	}
	opts.conv = c
	m, err := Load(f, opts)
	if err != nil {
		if c.file != nil {
			c.file.Close()
		}
		return nil, err
	}
	if c.file != nil {
		m.cache = c.file
	}
	return m, nil
}

// QuantCachePath returns the cache entry LoadCached uses for the file at
// path (of sha256 sourceSHA256, see SourceSHA256) converted as types says.
func QuantCachePath(f *gguf.File, sourceSHA256, cacheDir string, types map[string]kernels.Type, allowRequantize bool) (string, error) {
	jobs, err := planJobs(f, &Options{Types: types, AllowRequantize: allowRequantize})
	if err != nil {
		return "", err
	}
	return entryPath(cacheDir, sourceSHA256, typesDigest(jobs)), nil
}

// typesDigest is the sha256 of the conversions, one "name=TYPE" line per
// converted tensor in file order.
func typesDigest(jobs []convJob) string {
	h := sha256.New()
	for i := range jobs {
		fmt.Fprintf(h, "%s=%s\n", jobs[i].ti.Name, jobs[i].target)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func entryPath(cacheDir, srcSHA, typesSHA string) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("llm-engine quant cache v%d\x00%s\x00%s", QuantCacheVersion, srcSHA, typesSHA)))
	return filepath.Join(cacheDir, "quant", fmt.Sprintf("%.16s-%x.gguf", srcSHA, h[:12]))
}

func cachedConversions(f *gguf.File, path, cacheDir string, jobs []convJob, o *Options) (*converted, error) {
	srcSHA, err := SourceSHA256(path, cacheDir)
	if err != nil {
		return nil, err
	}
	typesSHA := typesDigest(jobs)
	entry := entryPath(cacheDir, srcSHA, typesSHA)
	rebuilt := ""
	cf, err := gguf.Open(entry)
	switch {
	case err == nil:
		c, why := useEntry(cf, jobs, srcSHA, typesSHA)
		if c != nil {
			c.info.CachePath, c.info.CacheHit = entry, true
			// Its modification time is its last use (PruneQuantCache
			// removes the least recently used first); a read-only cache
			// only loses that order.
			now := time.Now()
			_ = os.Chtimes(entry, now, now)
			if o.Progress != nil {
				total := c.info.SourceBytes
				o.Progress(total, total)
			}
			return c, nil
		}
		rebuilt = why
		cf.Close()
	case !errors.Is(err, fs.ErrNotExist):
		rebuilt = err.Error()
	}

	start := time.Now()
	if err := writeEntry(entry, path, f, jobs, srcSHA, typesSHA, o); err != nil {
		// An unwritable cache is not fatal: convert in memory.
		c := &converted{}
		if err := c.inMemory(f, jobs, o); err != nil {
			return nil, err
		}
		c.info.CacheError, c.info.Rebuilt = err.Error(), rebuilt
		return c, nil
	}
	cf, err = gguf.Open(entry)
	if err != nil {
		return nil, fmt.Errorf("model: reopening the cache entry just written: %w", err)
	}
	c, why := useEntry(cf, jobs, srcSHA, typesSHA)
	if c == nil {
		cf.Close()
		return nil, fmt.Errorf("model: the cache entry just written (%s) is invalid: %s", entry, why)
	}
	c.info.CachePath, c.info.Rebuilt, c.info.Duration = entry, rebuilt, time.Since(start)
	return c, nil
}

// useEntry checks an opened cache entry against what is asked for and
// returns the conversions it holds, or nil and why it cannot be used.
func useEntry(cf *gguf.File, jobs []convJob, srcSHA, typesSHA string) (*converted, string) {
	if v, ok := cf.Uint(cacheKeyVersion); !ok || v != QuantCacheVersion {
		return nil, fmt.Sprintf("cache entry version %v, want %d", v, QuantCacheVersion)
	}
	if s, _ := cf.String(cacheKeySource); s != srcSHA {
		return nil, "cache entry made from another source file"
	}
	if s, _ := cf.String(cacheKeyTypes); s != typesSHA {
		return nil, "cache entry made for other tensor types"
	}
	if len(cf.Tensors) != len(jobs) {
		return nil, fmt.Sprintf("cache entry holds %d tensors, want %d", len(cf.Tensors), len(jobs))
	}
	crcs, _ := cf.ArrayValue(cacheKeyCRC)
	sums, _ := crcs.Values.([]uint32)
	if len(sums) != len(jobs) {
		return nil, "cache entry has no valid checksum table"
	}
	c := &converted{tensors: make(map[string]convTensor, len(jobs)), file: cf, info: jobsInfo(jobs)}
	for i := range jobs {
		j, t := &jobs[i], &cf.Tensors[i]
		if t.Name != j.ti.Name || t.Type != j.target || !slices.Equal(t.Dims, j.ti.Dims) {
			return nil, fmt.Sprintf("cache entry tensor %d is %s %s %v, want %s %s %v", i, t.Name, t.Type, t.Dims, j.ti.Name, j.target, j.ti.Dims)
		}
		data := cf.TensorData(t)
		if got := crc32.Checksum(data, castagnoli); got != sums[i] {
			return nil, fmt.Sprintf("tensor %s: checksum %08x, recorded %08x", t.Name, got, sums[i])
		}
		c.tensors[t.Name] = convTensor{typ: t.Type, data: data}
	}
	return c, ""
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// writeEntry converts jobs while streaming them into a new cache entry.
func writeEntry(entry, srcPath string, f *gguf.File, jobs []convJob, srcSHA, typesSHA string, o *Options) error {
	if err := os.MkdirAll(filepath.Dir(entry), 0o755); err != nil {
		return fmt.Errorf("model: cache: %w", err)
	}
	w := gguf.NewWriter()
	if err := w.Set(cacheKeyCRC, make([]uint32, len(jobs))); err != nil {
		return err
	}
	for _, kv := range []struct {
		k string
		v any
	}{{cacheKeyVersion, uint32(QuantCacheVersion)}, {cacheKeySource, srcSHA}, {cacheKeyTypes, typesSHA}, {cacheKeyPath, srcPath}} {
		if err := w.Set(kv.k, kv.v); err != nil {
			return err
		}
	}
	cv := newRowConverter(o.Pool, jobs)
	pr := newProgress(jobs, o.Progress)
	sums := make([]uint32, len(jobs))
	var buf []byte
	for i := range jobs {
		j := &jobs[i]
		err := w.AddTensor(gguf.TensorSpec{Name: j.ti.Name, Dims: j.ti.Dims, Type: j.target,
			WriteData: func(out io.Writer) error {
				src := f.TensorData(j.ti)
				crc := uint32(0)
				for r0 := 0; r0 < j.rows; {
					r1 := min(j.rows, r0+cv.chunkRows(j))
					n := (r1 - r0) * j.dstRow
					if cap(buf) < n {
						buf = make([]byte, n)
					}
					cv.convert(j, src, buf[:n], r0, r1)
					crc = crc32.Update(crc, castagnoli, buf[:n])
					if _, err := out.Write(buf[:n]); err != nil {
						return err
					}
					pr.add(int64(r1-r0) * int64(j.srcRow))
					r0 = r1
				}
				releasePages(src)
				sums[i] = crc
				return nil
			}})
		if err != nil {
			return err
		}
	}
	pf, err := renameio.NewPendingFile(entry, renameio.WithPermissions(0o644), renameio.WithTempDir(filepath.Dir(entry)))
	if err != nil {
		return fmt.Errorf("model: cache: %w", err)
	}
	defer pf.Cleanup()
	if _, err := w.WriteTo(pf); err != nil {
		return fmt.Errorf("model: cache: writing %s: %w", entry, err)
	}
	// The CRC table is the first metadata value: after the 24-byte header,
	// the key (u64 length + bytes), the value type (u32), the element type
	// (u32) and the count (u64).
	tab := make([]byte, 4*len(sums))
	for i, s := range sums {
		binary.LittleEndian.PutUint32(tab[4*i:], s)
	}
	off := int64(24 + 8 + len(cacheKeyCRC) + 4 + 4 + 8)
	if _, err := pf.WriteAt(tab, off); err != nil {
		return fmt.Errorf("model: cache: writing %s: %w", entry, err)
	}
	if err := pf.CloseAtomicallyReplace(); err != nil {
		return fmt.Errorf("model: cache: %w", err)
	}
	pr.finish()
	return nil
}

// ---------------------------------------------------------------------------
// Source file hashes

type hashRecord struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	SHA256  string `json:"sha256"`
}

func statRecord(path string) (hashRecord, error) {
	st, err := os.Stat(path)
	if err != nil {
		return hashRecord{}, fmt.Errorf("model: %w", err)
	}
	r := hashRecord{Path: path, Size: st.Size(), MtimeNS: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		r.Dev, r.Ino = uint64(sys.Dev), sys.Ino
	}
	return r, nil
}

// SourceSHA256 returns the hex sha256 of the file at path. It is computed
// once (reading the file, not mapping it) and remembered in
// cacheDir/sha256/, keyed by the absolute path, size, modification time,
// device and inode: a file changed in place or replaced is hashed again.
// An empty cacheDir computes it every time.
func SourceSHA256(path, cacheDir string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("model: %w", err)
	}
	rec, err := statRecord(abs)
	if err != nil {
		return "", err
	}
	var recPath string
	if cacheDir != "" {
		ph := sha256.Sum256([]byte(abs))
		recPath = filepath.Join(cacheDir, "sha256", hex.EncodeToString(ph[:16])+".json")
		if b, err := os.ReadFile(recPath); err == nil {
			var old hashRecord
			if json.Unmarshal(b, &old) == nil && old.SHA256 != "" {
				sum := old.SHA256
				old.SHA256 = ""
				if old == rec && isHexSHA256(sum) {
					return sum, nil
				}
			}
		}
	}
	fh, err := os.Open(abs)
	if err != nil {
		return "", fmt.Errorf("model: %w", err)
	}
	h := sha256.New()
	_, err = io.CopyBuffer(h, fh, make([]byte, 1<<20))
	fh.Close()
	if err != nil {
		return "", fmt.Errorf("model: hashing %s: %w", abs, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	after, err := statRecord(abs)
	if err != nil {
		return "", err
	}
	if after != rec {
		return "", fmt.Errorf("model: %s changed while it was being hashed", abs)
	}
	if recPath != "" {
		rec.SHA256 = sum
		if b, err := json.Marshal(rec); err == nil {
			if os.MkdirAll(filepath.Dir(recPath), 0o755) == nil {
				_ = renameio.WriteFile(recPath, append(b, '\n'), 0o644, renameio.WithTempDir(filepath.Dir(recPath))) // a cache: failing to write it only costs time
			}
		}
	}
	return sum, nil
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}

// PruneResult reports what PruneQuantCache removed and kept.
type PruneResult struct {
	Removed      []string // entries deleted, least recently used first
	RemovedBytes int64
	KeptBytes    int64 // what the cache holds afterwards
}

// PruneQuantCache bounds the quantization cache of cacheDir (its quant/
// entries) to maxBytes: the least recently used entries (by modification
// time, which a cache hit refreshes) are deleted until the rest fit,
// never the entries named in keep (the one a load just wrote or used). An
// entry a loaded model maps stays valid for that model (the mapping keeps
// the deleted file's pages); the next load of it converts again. Only
// files named as LoadCached names its entries are considered.
func PruneQuantCache(cacheDir string, maxBytes int64, keep ...string) (PruneResult, error) {
	var res PruneResult
	dir := filepath.Join(cacheDir, "quant")
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("model: quant cache: %w", err)
	}
	type entry struct {
		path string
		size int64
		used time.Time
		keep bool
	}
	var es []entry
	for _, de := range des {
		if !de.Type().IsRegular() || !isCacheEntryName(de.Name()) {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		p := filepath.Join(dir, de.Name())
		e := entry{path: p, size: fi.Size(), used: fi.ModTime()}
		for _, k := range keep {
			if k != "" && filepath.Clean(k) == p {
				e.keep = true
			}
		}
		es = append(es, e)
		res.KeptBytes += e.size
	}
	slices.SortFunc(es, func(a, b entry) int {
		if c := a.used.Compare(b.used); c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	var errs []error
	for _, e := range es {
		if res.KeptBytes <= maxBytes {
			break
		}
		if e.keep {
			continue
		}
		if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		res.Removed = append(res.Removed, e.path)
		res.RemovedBytes += e.size
		res.KeptBytes -= e.size
	}
	return res, errors.Join(errs...)
}

// isCacheEntryName reports whether name is an entry name of entryPath:
// 16 hex digits, '-', 24 hex digits, ".gguf".
func isCacheEntryName(name string) bool {
	if len(name) != 16+1+24+5 || name[16] != '-' || !strings.HasSuffix(name, ".gguf") {
		return false
	}
	for i, c := range name[:41] {
		if i == 16 {
			continue
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
