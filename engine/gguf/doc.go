// Package gguf reads and writes GGUF files (versions 2 and 3), the container
// format of llama.cpp models.
//
// # Format
//
// A GGUF file is little-endian throughout:
//
//	header       magic "GGUF" (uint32 0x46554747), version uint32,
//	             tensor count uint64, metadata count uint64
//	metadata     count × { key string, value type uint32, value }
//	tensor infos count × { name string, n_dims uint32, dims n_dims × uint64,
//	             type uint32 (a ggml type id), offset uint64 }
//	padding      zeros up to a multiple of the alignment
//	data         the tensors' bytes, each at its offset from the start of
//	             the data section, each offset a multiple of the alignment
//
// A string is a uint64 byte length followed by the bytes (no terminator). A
// value is one of the scalar types (u)int8/16/32/64, float32/64 and bool (one
// byte, 0 or 1), a string, or an array: element type uint32, count uint64,
// then the elements (arrays may nest). The alignment is the metadata value
// general.alignment, 32 when absent. Dims[0] is the contiguous dimension:
// a [4096, 32000] matrix is 32000 rows of 4096 elements. A tensor's byte size
// follows from its type and dims (kernels.Type.RowSize of Dims[0] times the
// number of rows); block-quantized types need Dims[0] to be a whole number
// of blocks.
//
// # Reading
//
// Open memory-maps a file (read-only) and Parse reads an image in memory;
// both return a File whose tensor data aliases the map. Open refuses
// anything but a regular file before reading it, and never blocks: a FIFO,
// a device, a directory or a socket fails at once (ErrNotRegular).
//
// Parse treats its input as hostile. It never panics, never reads out of
// bounds, and allocates at most a small multiple of the input's size,
// whatever the input holds: every count and length is checked against the
// bytes that remain before anything is allocated for it. A file is accepted
// only if all of these hold:
//
//   - the magic is "GGUF" and the version 2 or 3 (big-endian files are
//     recognised and refused);
//   - nothing is truncated: every field, string and array lies inside the
//     file;
//   - metadata keys are non-empty, at most MaxKeyLen bytes and unique;
//     strings are at most MaxStringLen bytes; value types are known; bools
//     are 0 or 1; arrays nest at most MaxArrayDepth deep;
//   - general.alignment, when present, is an unsigned (or non-negative)
//     integer that is a power of two no larger than MaxAlignment;
//   - tensor names are non-empty, at most MaxTensorNameLen bytes and unique;
//     tensors have 1 to MaxDims dimensions, each at least 1, whose product
//     (the element count) is at most MaxElements, so sizes never overflow;
//   - tensor types are known ggml type ids, supported by this engine
//     (errors for the others name the type and the tensor, and wrap
//     ErrUnsupportedType), and the row length is a whole number of blocks;
//   - tensor offsets are multiples of the alignment, every tensor lies
//     entirely inside the data section, and no two tensors share a byte.
//
// Every violation is reported as an *Error whose message names the problem,
// with the metadata key or tensor concerned, and whose Offset is the byte
// offset of the offending field, for example:
//
//	gguf: tensor info 1: tensor "blk.0.attn_q.weight" has type Q4_0: unsupported
//	tensor type (supported: F32, F16, Q5_0, Q8_0, Q4_K, Q6_K, Q8_K, BF16) (at byte offset 105)
//	gguf: metadata "tokenizer.ggml.tokens": array element 335: truncated: string
//	length needs 8 bytes, 6 remain (at byte offset 4563)
//
// Gaps between tensors and bytes after the last one are allowed, as are any
// metadata keys: the meaning of keys (architecture parameters, tokenizer) is
// for the packages that use them to check. String contents are not checked
// for UTF-8 validity.
//
// A file that is truncated by another process while it is mapped makes the
// lost pages raise SIGBUS when read; models must be replaced by rename, not
// rewritten in place.
//
// # Writing
//
// Writer assembles a file: metadata (AddKV with an explicit type, or Set,
// which infers it from the Go type; arrays of any element type and nested
// arrays included), then tensors (AddTensor) whose bytes come from a slice,
// an io.Reader or a callback that writes them. Nothing of the tensor data is
// read before WriteTo writes it, so a file larger than memory can be
// produced (see package engine/synth). Everything is validated on the way
// in, with the reader's limits, so whatever the Writer writes parses (as
// long as its tensor types are ones the engine supports). The
// layout is llama.cpp's, byte for byte: rewriting a parsed model with its
// metadata and tensors in the same order reproduces the file.
package gguf
