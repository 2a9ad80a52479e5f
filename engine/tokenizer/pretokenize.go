package tokenizer

import (
	"fmt"
	"strings"
	"sync"
)

// Pre-tokenizer regexes, verbatim from llama.cpp's llm_tokenizer_bpe (Go and
// C++ string escapes agree for these literals).
const (
	reGPT2        = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
	reLlama3      = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
	reLlama3Orig  = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
	reQwen2       = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
	reAFMoEDigits = "\\p{AFMoE_digits}"
)

var preRegexes = map[string][]string{
	"default": {
		"[\\p{P}\\$\\+<=>\\^~\\|]+",
		reGPT2,
		"\\p{N}+",
		"[0-9][0-9][0-9]",
	},
	"llama3": {reLlama3},
	"jais2": {
		"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
	},
	"deepseek-llm": {
		"[\r\n]",
		"\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
		"\\s?[!-/:-~！-／：-～‘-‟　-。]+",
		"\\s+$",
		"[一-龥ࠀ-一가-퟿]+",
		"\\p{N}+",
	},
	"deepseek3": {
		"\\p{N}{1,3}",
		"[一-龥぀-ゟ゠-ヿ]+",
		"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
	},
	"spark2_5": {
		"\\p{N}{1,3}",
		"[一-龥぀-ゟ゠-ヿ]+",
		"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
		"\\p{N}",
	},
	"youtu": {
		"[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
		"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"deepseek-coder": {
		"[\r\n]",
		"\\s?\\p{L}+",
		"\\s?\\p{P}+",
		"[一-龥ࠀ-一가-퟿]+",
		"\\p{N}",
	},
	"falcon": {
		"[\\p{P}\\$\\+<=>\\^~\\|`]+",
		reGPT2,
		"[0-9][0-9][0-9]",
	},
	"starcoder": {"\\p{N}", reGPT2},
	"gpt2":      {reGPT2},
	"qwen2":     {reQwen2},
	"qwen35": {
		"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"poro":     {" ?[^(\\s|.,!?…。，、।۔،)]+"},
	"viking":   {" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"},
	"chatglm4": {reLlama3},
	"tekken": {
		"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"chameleon": {
		"<sentinel:[0-9]+>",
		"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
		"([\\t\\n]|    |  )",
		"\\p{N}",
		"[\\p{P}!-/:-@\\[-`{-~]",
		reGPT2,
	},
	"gpt4o": {
		"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"granite-emb-multi": {
		"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"tiny-aya": {
		"\\d{1,3}(?=(?:\\d{3})*\\b)",
		"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"superbpe": {"\\p{N}+", "(?=(\\d{3})+(?!\\d))"},
	"bailingmoe": {
		"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
	},
	"seed-coder": {
		"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"ufakzeka": {
		"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"grok-2": {reQwen2},
	"afmoe": {
		reAFMoEDigits,
		"[一-鿿㐀-䶿\uf900-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+",
		"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"laguna": {
		"[^\\n]+|[\\n]+",
		reQwen2,
	},
	"exaone-moe": {
		"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
	},
	"spm-bpe": {"[^\\n]+|[\\n]+"},
	"minicpm5": {
		"\\p{N}{1,3}",
		"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"whitespace": {"\\S+"},
}

// preConfig is what a tokenizer.ggml.pre value selects.
type preConfig struct {
	name             string // the pre value
	group            string // key into preRegexes
	cleanSpacesOff   bool
	ignoreMerges     bool
	addBOS           bool
	noBOS            bool
	escapeWhitespace bool
	byteEncode       bool
	regexes          []*compiledPre
}

type preOpt struct {
	group                                 string
	clean                                 bool // clean_spaces stays on
	ignoreMerges, addBOS, noBOS, escapeWS bool
	noByteEncode                          bool
}

// preTable maps tokenizer.ggml.pre values to llama.cpp's pre-tokenizer
// types (LLAMA_VOCAB_PRE_TYPE_*) and the flags it sets with them.
var preTable = func() map[string]preOpt {
	m := map[string]preOpt{}
	add := func(o preOpt, names ...string) {
		for _, n := range names {
			m[n] = o
		}
	}
	add(preOpt{group: "default", clean: true}, "default", "")
	add(preOpt{group: "minicpm5", clean: true, ignoreMerges: true}, "minicpm5")
	add(preOpt{group: "llama3", clean: true, ignoreMerges: true, addBOS: true},
		"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano")
	add(preOpt{group: "deepseek-llm"}, "deepseek-llm")
	add(preOpt{group: "deepseek-coder"}, "deepseek-coder")
	add(preOpt{group: "deepseek3"}, "deepseek-v3", "hunyuan-dense", "hy_v4", "joyai-llm")
	add(preOpt{group: "spark2_5"}, "spark2_5")
	add(preOpt{group: "youtu", ignoreMerges: true}, "youtu")
	add(preOpt{group: "falcon", clean: true}, "falcon")
	add(preOpt{group: "gpt2", clean: true}, "mpt", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es",
		"jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "olmo", "jais", "exaone4")
	add(preOpt{group: "gpt2"}, "trillion", "granite-docling")
	add(preOpt{group: "starcoder", clean: true}, "starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2")
	add(preOpt{group: "starcoder"}, "command-r", "smollm")
	add(preOpt{group: "jais2", clean: true}, "jais-2")
	add(preOpt{group: "spm-bpe", clean: true, escapeWS: true, noByteEncode: true}, "gemma4", "granite-embed-multi-311m")
	add(preOpt{group: "spm-bpe", escapeWS: true, noByteEncode: true}, "sarvam-moe")
	add(preOpt{group: "whitespace", clean: true, noByteEncode: true}, "whitespace")
	add(preOpt{group: "qwen2"}, "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open")
	add(preOpt{group: "qwen2", clean: true}, "megrez", "stablelm2")
	add(preOpt{group: "qwen35"}, "qwen35")
	add(preOpt{group: "llama3", clean: true}, "dbrx", "smaug-bpe")
	add(preOpt{group: "poro"}, "poro-chat")
	add(preOpt{group: "poro", clean: true}, "bloom", "gpt3-finnish")
	add(preOpt{group: "chatglm4", clean: true, noBOS: true}, "glm4", "chatglm-bpe")
	add(preOpt{group: "viking"}, "viking")
	add(preOpt{group: "tekken", ignoreMerges: true, addBOS: true}, "tekken")
	add(preOpt{group: "exaone-moe", clean: true}, "exaone-moe")
	add(preOpt{group: "chameleon", addBOS: true}, "chameleon")
	add(preOpt{group: "gpt4o"}, "gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2")
	add(preOpt{group: "granite-emb-multi", ignoreMerges: true}, "granite-embed-multi-97m")
	add(preOpt{group: "tiny-aya"}, "tiny_aya", "cohere2moe")
	add(preOpt{group: "superbpe"}, "superbpe")
	add(preOpt{group: "bailingmoe"}, "bailingmoe", "bailingmoe2", "llada-moe")
	add(preOpt{group: "seed-coder"}, "seed-coder")
	add(preOpt{group: "ufakzeka"}, "ufakzeka")
	add(preOpt{group: "grok-2"}, "grok-2")
	add(preOpt{group: "afmoe"}, "afmoe")
	add(preOpt{group: "laguna"}, "laguna")
	return m
}()

// PreTokenizers lists the tokenizer.ggml.pre values this package accepts.
func PreTokenizers() []string {
	var out []string
	for k := range preTable {
		if k != "" {
			out = append(out, k)
		}
	}
	return out
}

var (
	preCacheMu sync.Mutex
	preCache   = map[string]*preConfig{}
)

// lookupPre returns the compiled pre-tokenizer for a tokenizer.ggml.pre
// value (an absent value means "default", as in llama.cpp).
func lookupPre(pre string) (*preConfig, error) {
	o, ok := preTable[pre]
	if !ok {
		return nil, fmt.Errorf("tokenizer: unknown pre-tokenizer type %q (tokenizer.ggml.pre)", pre)
	}
	preCacheMu.Lock()
	defer preCacheMu.Unlock()
	if pc, ok := preCache[pre]; ok {
		return pc, nil
	}
	pc := &preConfig{
		name:             pre,
		group:            o.group,
		cleanSpacesOff:   !o.clean,
		ignoreMerges:     o.ignoreMerges,
		addBOS:           o.addBOS,
		noBOS:            o.noBOS,
		escapeWhitespace: o.escapeWS,
		byteEncode:       !o.noByteEncode,
	}
	for _, src := range preRegexes[o.group] {
		cp, err := compilePre(src)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: pre-tokenizer %q: %w", pre, err)
		}
		pc.regexes = append(pc.regexes, cp)
	}
	preCache[pre] = pc
	return pc, nil
}

type splitKind int

const (
	splitRegex splitKind = iota
	splitGPT2
	splitLlama3
	splitQwen2
	splitAFMoEDigits
)

type compiledPre struct {
	kind splitKind
	re   *regex
}

var ucatNames = []string{"\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}", "\\p{Lu}", "\\p{Ll}", "\\p{Lt}", "\\p{Lm}", "\\p{Lo}"}

func compilePre(src string) (*compiledPre, error) {
	switch src {
	case reGPT2:
		return &compiledPre{kind: splitGPT2}, nil
	case reLlama3, reLlama3Orig:
		return &compiledPre{kind: splitLlama3}, nil
	case reQwen2:
		// llama.cpp runs this one through std::regex; the hand-written
		// Llama-3 splitter with single digits is equivalent (checked by a
		// differential test against the regex engine) and much faster.
		return &compiledPre{kind: splitQwen2}, nil
	case reAFMoEDigits:
		return &compiledPre{kind: splitAFMoEDigits}, nil
	}
	collapsed := false
	for _, u := range ucatNames {
		if strings.Contains(src, u) {
			collapsed = true
		}
	}
	if collapsed {
		for _, r := range src {
			if r >= 128 {
				return nil, fmt.Errorf("regex %q mixes unicode categories and non-ASCII characters", src)
			}
		}
	}
	re, err := compileRegex(src, collapsed)
	if err != nil {
		return nil, err
	}
	return &compiledPre{kind: splitRegex, re: re}, nil
}

// splitter applies a pre-tokenizer to text (llama.cpp's unicode_regex_split
// followed by the byte-level encoding of each word).
type splitter struct {
	pre       *preConfig
	cpts      []rune
	collapsed []rune
	wide      []rune
	offs, tmp []int
	buf       []byte
	ends      []int
	haveColl  bool
	haveWide  bool
}

func newSplitter(pc *preConfig) *splitter { return &splitter{pre: pc} }

// split pre-tokenizes text. It returns the text re-encoded from llama.cpp's
// code points (invalid UTF-8 bytes become U+FFFD, as in llama.cpp) and the
// end offsets of the words in it, in bytes; empty words are dropped. Both
// are owned by the splitter until the next call.
func (sp *splitter) split(text string) (buf []byte, ends []int) {
	sp.cpts = decodeCpts(text, sp.cpts)
	cpts := sp.cpts
	sp.haveColl, sp.haveWide = false, false
	sp.offs = append(sp.offs[:0], len(cpts))
	for _, cp := range sp.pre.regexes {
		sp.tmp = sp.tmp[:0]
		switch cp.kind {
		case splitGPT2:
			sp.tmp = splitCustomGPT2(cpts, sp.offs, sp.tmp)
		case splitLlama3:
			sp.tmp = splitCustomLlama3(cpts, sp.offs, sp.tmp, 3)
		case splitQwen2:
			sp.tmp = splitCustomLlama3(cpts, sp.offs, sp.tmp, 1)
		case splitAFMoEDigits:
			sp.tmp = splitCustomAFMoE(cpts, sp.offs, sp.tmp)
		}
		if cp.kind != splitRegex && len(sp.tmp) > 0 {
			sp.offs, sp.tmp = sp.tmp, sp.offs
			continue
		}
		if cp.kind == splitAFMoEDigits {
			continue // llama.cpp's std::regex cannot run this pseudo-pattern
		}
		re := cp.re
		if re == nil {
			// a custom pattern that returned nothing (empty input): llama.cpp
			// falls back to std::regex, which finds nothing either
			continue
		}
		var eff []rune
		if re.collapsed {
			if !sp.haveColl {
				sp.collapsed = sp.collapsed[:0]
				for _, r := range cpts {
					sp.collapsed = append(sp.collapsed, collapse(r))
				}
				sp.haveColl = true
			}
			eff = sp.collapsed
		} else {
			if !sp.haveWide {
				sp.wide = sp.wide[:0]
				for _, r := range cpts {
					sp.wide = append(sp.wide, wide(r))
				}
				sp.haveWide = true
			}
			eff = sp.wide
		}
		start := 0
		for _, o := range sp.offs {
			sp.tmp = re.split(eff, start, start+o, sp.tmp)
			start += o
		}
		sp.offs, sp.tmp = sp.tmp, sp.offs
	}
	sp.buf = sp.buf[:0]
	sp.ends = sp.ends[:0]
	start := 0
	for _, o := range sp.offs {
		if o == 0 {
			continue
		}
		for _, r := range cpts[start : start+o] {
			sp.buf = appendCpt(sp.buf, r)
		}
		start += o
		sp.ends = append(sp.ends, len(sp.buf))
	}
	return sp.buf, sp.ends
}

// The custom splitters below port llama.cpp's hand-written versions of the
// GPT-2 and Llama-3 patterns (unicode.cpp), which it uses instead of
// std::regex for exactly those pattern strings.

func splitCustomGPT2(cpts []rune, offsets []int, out []int) []int {
	start := 0
	for _, offset := range offsets {
		ini, end := start, start+offset
		start = end
		const outOfRange = rune(-1)
		getCpt := func(pos int) rune {
			if ini <= pos && pos < end {
				return cpts[pos]
			}
			return outOfRange
		}
		getFlags := func(pos int) cptFlags {
			if ini <= pos && pos < end {
				return flagsOf(cpts[pos])
			}
			return 0
		}
		prevEnd := ini
		addToken := func(e int) int {
			n := e - prevEnd
			if n > 0 {
				out = append(out, n)
			}
			prevEnd = e
			return n
		}
		for pos := ini; pos < end; {
			cpt := getCpt(pos)
			flags := getFlags(pos)
			// 's|'t|'re|'ve|'m|'ll|'d
			if cpt == '\'' && pos+1 < end {
				next := getCpt(pos + 1)
				if next == 's' || next == 't' || next == 'm' || next == 'd' {
					pos += addToken(pos + 2)
					continue
				}
				if pos+2 < end {
					nn := getCpt(pos + 2)
					if (next == 'r' && nn == 'e') || (next == 'v' && nn == 'e') || (next == 'l' && nn == 'l') {
						pos += addToken(pos + 3)
						continue
					}
				}
			}
			flags2 := flags
			if cpt == ' ' {
				flags2 = getFlags(pos + 1)
			}
			sp := 0
			if cpt == ' ' {
				sp = 1
			}
			// <space>?\p{L}+
			if flags2.isLetter() {
				pos += sp
				for flags2.isLetter() {
					pos++
					flags2 = getFlags(pos)
				}
				addToken(pos)
				continue
			}
			// <space>?\p{N}+
			if flags2.isNumber() {
				pos += sp
				for flags2.isNumber() {
					pos++
					flags2 = getFlags(pos)
				}
				addToken(pos)
				continue
			}
			// <space>?[^\s\p{L}\p{N}]+
			if flags2&(flagWhitespace|flagLetter|flagNumber) == 0 && flags2 != 0 {
				pos += sp
				for flags2&(flagWhitespace|flagLetter|flagNumber) == 0 && flags2 != 0 {
					pos++
					flags2 = getFlags(pos)
				}
				addToken(pos)
				continue
			}
			nws := 0
			for getFlags(pos + nws).isWhitespace() {
				nws++
			}
			// \s+(?!\S)
			if nws > 1 && getCpt(pos+nws) != outOfRange {
				pos += nws - 1
				addToken(pos)
				continue
			}
			// \s+
			if nws > 0 {
				pos += nws
				addToken(pos)
				continue
			}
			// no match
			pos++
			addToken(pos)
		}
	}
	return out
}

func toLowerASCII(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 32
	}
	return r
}

// splitCustomLlama3 splits with the Llama-3 pattern; maxDigits is the n of
// \p{N}{1,n} (3 for Llama-3, 1 for the Qwen2 pattern's \p{N}).
func splitCustomLlama3(cpts []rune, offsets []int, out []int, maxDigits int) []int {
	start := 0
	for _, offset := range offsets {
		ini, end := start, start+offset
		start = end
		const outOfRange = rune(-1)
		getCpt := func(pos int) rune {
			if ini <= pos && pos < end {
				return cpts[pos]
			}
			return outOfRange
		}
		getFlags := func(pos int) cptFlags {
			if ini <= pos && pos < end {
				return flagsOf(cpts[pos])
			}
			return 0
		}
		prevEnd := ini
		addToken := func(e int) int {
			n := e - prevEnd
			if n > 0 {
				out = append(out, n)
			}
			prevEnd = e
			return n
		}
		for pos := ini; pos < end; {
			cpt := getCpt(pos)
			flags := getFlags(pos)
			// (?i:'s|'t|'re|'ve|'m|'ll|'d)
			if cpt == '\'' && pos+1 < end {
				next := toLowerASCII(getCpt(pos + 1))
				if next == 's' || next == 't' || next == 'm' || next == 'd' {
					pos += addToken(pos + 2)
					continue
				}
				if pos+2 < end {
					nn := toLowerASCII(getCpt(pos + 2))
					if (next == 'r' && nn == 'e') || (next == 'v' && nn == 'e') || (next == 'l' && nn == 'l') {
						pos += addToken(pos + 3)
						continue
					}
				}
			}
			// [^\r\n\p{L}\p{N}]?\p{L}+
			if !(cpt == '\r' || cpt == '\n' || flags.isNumber()) {
				if flags.isLetter() || getFlags(pos+1).isLetter() {
					pos++
					for getFlags(pos).isLetter() {
						pos++
					}
					addToken(pos)
					continue
				}
			}
			// \p{N}{1,3}
			if flags.isNumber() {
				i0 := pos
				for getFlags(pos).isNumber() {
					pos++
					if pos-i0 >= maxDigits {
						addToken(pos)
						i0 = pos
					}
				}
				addToken(pos)
				continue
			}
			// <space>?[^\s\p{L}\p{N}]+[\r\n]*
			flags2 := flags
			sp := 0
			if cpt == ' ' {
				flags2 = getFlags(pos + 1)
				sp = 1
			}
			if flags2&(flagWhitespace|flagLetter|flagNumber) == 0 && flags != 0 {
				pos += sp
				for flags2&(flagWhitespace|flagLetter|flagNumber) == 0 && flags2 != 0 {
					pos++
					flags2 = getFlags(pos)
				}
				c2 := getCpt(pos)
				for c2 == '\r' || c2 == '\n' {
					pos++
					c2 = getCpt(pos)
				}
				addToken(pos)
				continue
			}
			nws := 0
			lastRN := 0
			for getFlags(pos + nws).isWhitespace() {
				c2 := getCpt(pos + nws)
				if c2 == '\r' || c2 == '\n' {
					lastRN = pos + nws + 1
				}
				nws++
			}
			// \s*[\r\n]+
			if lastRN > 0 {
				pos = lastRN
				addToken(pos)
				continue
			}
			// \s+(?!\S)
			if nws > 1 && getCpt(pos+nws) != outOfRange {
				pos += nws - 1
				addToken(pos)
				continue
			}
			// \s+
			if nws > 0 {
				pos += nws
				addToken(pos)
				continue
			}
			pos++
			addToken(pos)
		}
	}
	return out
}

func splitCustomAFMoE(cpts []rune, offsets []int, out []int) []int {
	start := 0
	for _, offset := range offsets {
		ini, end := start, start+offset
		start = end
		prevEnd := ini
		addToken := func(e int) {
			if e-prevEnd > 0 {
				out = append(out, e-prevEnd)
			}
			prevEnd = e
		}
		for pos := ini; pos < end; {
			if flagsOf(cpts[pos]).isNumber() {
				ds := pos
				for pos < end && flagsOf(cpts[pos]).isNumber() {
					pos++
				}
				cnt := pos - ds
				cur := ds
				if r := cnt % 3; r > 0 {
					addToken(cur + r)
					cur += r
				}
				for cur < ds+cnt {
					addToken(cur + 3)
					cur += 3
				}
				continue
			}
			pos++
		}
		if prevEnd < end {
			addToken(end)
		}
	}
	return out
}
