// Package tokenizer converts between text and token ids for GGUF models,
// reproducing llama.cpp's tokenizers (src/llama-vocab.cpp, src/unicode.cpp)
// token for token.
//
// Two vocabulary kinds are supported, chosen by tokenizer.ggml.model:
//
// SentencePiece ("llama", SPM). Spaces are escaped to U+2581 "▁" and a
// "▁" is prepended to the first text fragment and to every fragment that
// follows a special token (add_space_prefix, default true). The text is cut
// into UTF-8 characters; a priority queue holds every adjacent pair whose
// concatenation is a vocabulary token, best score first, leftmost on ties.
// The best pair is merged, its new neighbours are queued, and stale entries
// (a side already merged away) are skipped, until nothing merges. Each
// remaining symbol is emitted as its token, or as <0xXX> byte tokens when it
// is not in the vocabulary (byte fallback).
//
// Byte-level BPE ("gpt2"). tokenizer.ggml.pre selects llama.cpp's
// pre-tokenizer: a list of regular expressions applied in turn, each
// splitting every current piece into matches and the gaps between them.
// The GPT-2 and Llama-3 patterns use hand-written splitters, ports of
// llama.cpp's; the others run on a small backtracking engine (regex.go)
// with std::regex's ECMAScript semantics, lookahead included, over the same
// "collapsed" text llama.cpp uses for \p{..} classes (each non-ASCII code
// point replaced by a marker of its Unicode category). Each word is mapped
// byte by byte to GPT-2's printable code points, then merged: the adjacent
// pair with the lowest rank in tokenizer.ggml.merges first, leftmost on
// ties, until no ranked pair remains.
//
// Before either algorithm, special tokens are cut out of the text (longest
// first): user-defined tokens always, control tokens only with
// parseSpecial. Token attributes follow llama.cpp, including its text-based
// detection of end-of-generation tokens and per-model strip rules.
//
// Two optimizations leave results unchanged (tests compare against the
// plain algorithm on random text): a bounded per-tokenizer cache of word
// results, and for SPM vocabularies in which no token has "▁" after another
// character, merging each "▁"-delimited segment separately (no merge can
// cross such a boundary, and the order of merges inside a segment is the
// same). The Qwen2 pattern, which llama.cpp runs through std::regex, uses
// the hand-written Llama-3 splitter with single digits; a differential test
// checks it against the regex engine.
//
// Decoding renders each token's piece (▁ to space, byte tokens to their
// byte, byte-level BPE text back to bytes; control tokens empty), strips
// one leading space of the first token for SPM, and for most BPE
// pre-tokenizers applies llama.cpp's clean-up of spaces before punctuation.
// StreamDecoder releases text incrementally without splitting a UTF-8
// character.
package tokenizer
