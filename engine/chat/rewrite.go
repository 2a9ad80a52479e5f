package chat

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Source rewriting.
//
// The engine (github.com/ardanlabs/jinja v1.8.0) gets a few things wrong
// that can't be fixed by registering functions, so Compile hands it a
// rewritten source instead of the template as published:
//
//  1. Whitespace control. The engine applies lstrip_blocks, trim_blocks and
//     the `-` markers to the nearest text of a tag even when other tags stand
//     in between (so `{{ a }} {% endif %}` loses its space), keeps the
//     template's trailing newline, and knows no `+` markers. rewriteSource
//     does Jinja2's lexer-level whitespace handling itself, exactly as
//     jinja2/lexer.py does (newlines normalised, one trailing newline
//     dropped, lstrip_blocks, trim_blocks, `-` and `+`), and gives every
//     piece of literal text to the engine as a string literal,
//     `{{ '…' }}`, so that no text is left for the engine to trim. Line
//     numbers are kept: stripped newlines move into the neighbouring tag.
//  2. String literals. The engine knows only \n \t \\ \' \" escapes;
//     Python's (\r \xhh \uXXXX \UXXXXXXXX octal \a \b \f \v, line
//     continuation) are decoded here and the literal re-encoded.
//  3. Output. `{{ expr }}` becomes `{{ (expr) | __chat_print }}`, a filter
//     with Python's str(): None prints "None", floats as repr (1.0, 1e-05),
//     lists and dicts as Python reprs.
//  4. Filters the engine has built in and won't let a template's scope
//     override: `| tojson` becomes `| __chat_tojson`, transformers' tojson
//     (the engine's sorts keys and escapes <>& when given indent=).
//  5. `{% for a, b in ITER if COND %}`: the engine evaluates COND with only
//     b bound (to the whole pair). The loop is split into one collecting the
//     pairs that pass COND into a namespace and a plain loop over them, which
//     keeps Jinja's loop.index/last/length and `else` semantics.
//  6. `{% generation %}…{% endgeneration %}`, the block transformers'
//     AssistantTracker extension adds (it marks assistant tokens and renders
//     its body unchanged), is dropped, keeping the body.
//  7. Every macro body starts with `{{ __chat_macro_enter() }}` and ends
//     with `{{ __chat_macro_leave() }}`, which count the nesting: the engine
//     would recurse until the Go stack overflows, a fatal error, where
//     Python stops with a RecursionError.
//
// Tags are found as Jinja2 finds them: quotes are skipped and `}}` / `%}`
// only close a tag outside brackets. A template the scanner can't take
// apart (an unclosed tag) is given to the engine unchanged, for it to
// report.

const (
	printFilterName = "__chat_print"
	// macroEnterName and macroLeaveName are called at the start and the end
	// of every macro body, to bound macro recursion (see Render).
	macroEnterName = "__chat_macro_enter"
	macroLeaveName = "__chat_macro_leave"
)

// piece is a lexed part of a template.
type piece struct {
	kind  byte   // 't' text, 'r' raw-block content, '{' expression, '%' statement, '#' comment, 'b' {% raw %}, 'e' {% endraw %}
	body  string // text, or the tag's body without delimiters and markers
	lmark byte   // '-', '+' or 0 after the opening delimiter
	rmark byte   // '-', '+' or 0 before the closing delimiter
	// newlines the whitespace handling removed around this tag, to keep
	// line numbers.
	before, after int
}

func (p *piece) isText() bool { return p.kind == 't' || p.kind == 'r' }

func rewriteSource(src string) string {
	src = normalizeNewlines(src)
	pieces, ok := lexTemplate(src)
	if !ok {
		return src
	}
	applyWhitespaceControl(pieces)

	var out strings.Builder
	out.Grow(len(src) + len(src)/4)
	loopN := 0
	for i := range pieces {
		p := &pieces[i]
		nlBefore := strings.Repeat("\n", p.before)
		nlAfter := strings.Repeat("\n", p.after)
		switch p.kind {
		case 't', 'r':
			if p.body != "" {
				out.WriteString("{{ " + engineStringLiteral(p.body) + " }}")
			}
		case '#', 'b', 'e':
			// Comments and raw delimiters print nothing; keep their lines.
			if n := p.before + p.after + strings.Count(p.body, "\n"); n > 0 {
				out.WriteString("{#" + strings.Repeat("\n", n) + "#}")
			}
		case '{':
			body := rewriteExpr(p.body)
			out.WriteString("{{ " + nlBefore + "(" + body + ") | " + printFilterName + nlAfter + " }}")
		case '%':
			if kw := stmtKeyword(p.body); kw == "generation" || kw == "endgeneration" {
				if n := p.before + p.after + strings.Count(p.body, "\n"); n > 0 {
					out.WriteString("{#" + strings.Repeat("\n", n) + "#}")
				}
				continue
			}
			body := rewriteExpr(p.body)
			if r, ok := rewriteFilteredUnpackLoop(body, nlBefore, nlAfter, loopN); ok {
				loopN++
				out.WriteString(r)
				continue
			}
			if stmtKeyword(body) == "endmacro" {
				out.WriteString("{{ " + macroLeaveName + "() }}")
			}
			out.WriteString("{% " + nlBefore + body + nlAfter + " %}")
			if stmtKeyword(body) == "macro" {
				out.WriteString("{{ " + macroEnterName + "() }}")
			}
		}
	}
	return out.String()
}

// normalizeNewlines turns \r\n and \r into \n and drops one trailing
// newline, as Jinja2 does with keep_trailing_newline=False.
func normalizeNewlines(src string) string {
	if strings.IndexByte(src, '\r') >= 0 {
		src = strings.ReplaceAll(src, "\r\n", "\n")
		src = strings.ReplaceAll(src, "\r", "\n")
	}
	return strings.TrimSuffix(src, "\n")
}

// lexTemplate splits src into text and tags, with a text piece (possibly
// empty) between any two tags and at both ends.
func lexTemplate(src string) ([]piece, bool) {
	var pieces []piece
	textStart := 0
	i := 0
	for i < len(src) {
		j := strings.Index(src[i:], "{")
		if j < 0 {
			break
		}
		i += j
		if i+1 >= len(src) || (src[i+1] != '{' && src[i+1] != '%' && src[i+1] != '#') {
			i++
			continue
		}
		pieces = append(pieces, piece{kind: 't', body: src[textStart:i]})
		if src[i+1] == '%' {
			if p, contentStart, ok := matchRawBegin(src, i); ok {
				end, q, ok := findEndRaw(src, contentStart)
				if !ok {
					return nil, false
				}
				pieces = append(pieces, p, piece{kind: 'r', body: src[contentStart:q.start]}, q.piece)
				i, textStart = end, end
				continue
			}
		}
		p, end, ok := scanTag(src, i)
		if !ok {
			return nil, false
		}
		pieces = append(pieces, p)
		i, textStart = end, end
	}
	pieces = append(pieces, piece{kind: 't', body: src[textStart:]})
	return pieces, true
}

// matchRawBegin matches Jinja2's `{%[-+]?\s*raw\s*(-%}|%})` at src[i].
func matchRawBegin(src string, i int) (piece, int, bool) {
	p := piece{kind: 'b'}
	k := i + 2
	if k < len(src) && (src[k] == '-' || src[k] == '+') {
		p.lmark = src[k]
		k++
	}
	k = skipSpaces(src, k)
	if !strings.HasPrefix(src[k:], "raw") {
		return p, 0, false
	}
	k = skipSpaces(src, k+3)
	switch {
	case strings.HasPrefix(src[k:], "-%}"):
		p.rmark = '-'
		return p, k + 3, true
	case strings.HasPrefix(src[k:], "%}"):
		return p, k + 2, true
	}
	return p, 0, false
}

type endRaw struct {
	start int // where the {% endraw %} tag starts
	piece piece
}

// findEndRaw finds Jinja2's `{%[-+]?\s*endraw\s*(\+%}|-%}|%})` from
// src[from], returning the index after it.
func findEndRaw(src string, from int) (int, endRaw, bool) {
	for i := from; i < len(src); i++ {
		if !strings.HasPrefix(src[i:], "{%") {
			continue
		}
		p := piece{kind: 'e'}
		k := i + 2
		if k < len(src) && (src[k] == '-' || src[k] == '+') {
			p.lmark = src[k]
			k++
		}
		k = skipSpaces(src, k)
		if !strings.HasPrefix(src[k:], "endraw") {
			continue
		}
		k = skipSpaces(src, k+6)
		for _, c := range []string{"+%}", "-%}", "%}"} {
			if strings.HasPrefix(src[k:], c) {
				if len(c) == 3 {
					p.rmark = c[0]
				}
				return k + len(c), endRaw{start: i, piece: p}, true
			}
		}
	}
	return 0, endRaw{}, false
}

func skipSpaces(s string, k int) int {
	for k < len(s) {
		r, size := utf8.DecodeRuneInString(s[k:])
		if !pyIsSpace(r) {
			break
		}
		k += size
	}
	return k
}

// scanTag scans the expression, statement or comment tag at src[start].
// Inside expressions and statements, quoted strings are skipped and the
// closing delimiter counts only outside brackets, as in Jinja2's lexer.
func scanTag(src string, start int) (piece, int, bool) {
	p := piece{kind: src[start+1]}
	i := start + 2
	if i < len(src) && (src[i] == '-' || src[i] == '+') {
		p.lmark = src[i]
		i++
	}
	bodyStart := i
	if p.kind == '#' {
		k := strings.Index(src[i:], "#}")
		if k < 0 {
			return p, 0, false
		}
		end := i + k
		if end > bodyStart && (src[end-1] == '-' || src[end-1] == '+') {
			p.rmark = src[end-1]
			end--
		}
		p.body = src[bodyStart:end]
		return p, i + k + 2, true
	}
	closer := "}}"
	if p.kind == '%' {
		closer = "%}"
	}
	depth := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == '\'' || c == '"':
			i = skipString(src, i) + 1
			continue
		case depth == 0 && strings.HasPrefix(src[i:], closer):
			end := i
			if end > bodyStart && (src[end-1] == '-' || p.kind == '%' && src[end-1] == '+') {
				p.rmark = src[end-1]
				end--
			}
			p.body = src[bodyStart:end]
			return p, i + len(closer), true
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			if depth > 0 {
				depth--
			}
		}
		i++
	}
	return p, 0, false
}

// applyWhitespaceControl applies Jinja2's whitespace rules (trim_blocks and
// lstrip_blocks on, as transformers sets them) to the text pieces, the way
// jinja2/lexer.py's tokeniter does: the closing delimiter of a tag eats
// what follows it (`-` all whitespace; a block or comment end, or endraw,
// one newline), then the opening of the next tag trims the text before it
// (`-` all trailing whitespace; a block or comment start without `+` the
// indentation of its line, when only whitespace stands between the line's
// start and the tag).
func applyWhitespaceControl(pieces []piece) {
	for i := range pieces {
		t := &pieces[i]
		if !t.isText() {
			continue
		}
		text := t.body
		lineStarting := true
		if i > 0 {
			prev := &pieces[i-1]
			consumed := ""
			switch {
			case prev.rmark == '-':
				k := skipSpaces(text, 0)
				consumed = text[:k]
			case prev.rmark == '+':
			case prev.kind == '%' || prev.kind == '#' || prev.kind == 'e':
				if strings.HasPrefix(text, "\n") {
					consumed = "\n"
				}
			}
			text = text[len(consumed):]
			prev.after += strings.Count(consumed, "\n")
			lineStarting = strings.HasSuffix(consumed, "\n")
		}
		if i+1 < len(pieces) {
			next := &pieces[i+1]
			kept := text
			switch {
			case next.lmark == '-':
				kept = strings.TrimRightFunc(text, pyIsSpace)
			case next.lmark == '+' || next.kind == '{':
			default: // block, comment, raw, endraw
				lpos := strings.LastIndexByte(text, '\n') + 1
				if (lpos > 0 || lineStarting) && lpos < len(text) && strings.TrimLeftFunc(text[lpos:], pyIsSpace) == "" {
					kept = text[:lpos]
				}
			}
			next.before += strings.Count(text[len(kept):], "\n")
			text = kept
		}
		t.body = text
	}
}

// pyIsSpace is Python's str.isspace for one character (what \s and
// str.strip() use).
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f
}

// engineStringLiteral quotes template text for the engine, which decodes
// \\ \' \n and \t in a literal and takes every other byte (newlines
// included) as it is.
func engineStringLiteral(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) + 2)
	sb.WriteByte('\'')
	writeEngineLiteralBody(&sb, s, false)
	sb.WriteByte('\'')
	return sb.String()
}

// writeEngineLiteralBody writes s for the inside of an engine string
// literal; escapedNewlines writes newlines as \n.
func writeEngineLiteralBody(sb *strings.Builder, s string, escapedNewlines bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			sb.WriteString(`\\`)
		case c == '\'':
			sb.WriteString(`\'`)
		case c == '\n' && escapedNewlines:
			sb.WriteString(`\n`)
		default:
			sb.WriteByte(c)
		}
	}
}

// rewriteExpr rewrites the body of an expression or statement tag: string
// literals are re-encoded for the engine, `| tojson` is renamed, and `}}`
// and `%}` outside strings are split so that the engine's scanner, which
// doesn't count brackets, finds the tag's real end.
func rewriteExpr(body string) string {
	var out strings.Builder
	out.Grow(len(body) + 8)
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\'' || c == '"':
			end := skipString(body, i)
			if end >= len(body) || body[end] != c {
				out.WriteString(body[i:]) // unterminated: leave it to the engine
				return out.String()
			}
			out.WriteString(reencodePyLiteral(body[i+1 : end]))
			i = end
		case c == '|':
			out.WriteByte('|')
			j := i + 1
			for j < len(body) && isSpace(body[j]) {
				j++
			}
			const name = "tojson"
			if strings.HasPrefix(body[j:], name) && (j+len(name) == len(body) || !isIdentByte(body[j+len(name)])) {
				out.WriteString(body[i+1 : j])
				out.WriteString(tojsonFilterName)
				i = j + len(name) - 1
			}
		case (c == '}' || c == '%') && i+1 < len(body) && body[i+1] == '}':
			out.WriteByte(c)
			out.WriteByte(' ')
		default:
			out.WriteByte(c)
		}
	}
	return out.String()
}

// reencodePyLiteral turns the body of a Python string literal (what
// Jinja2 decodes with "unicode-escape") into an engine literal with the
// same value. Characters written as such are copied, so a literal that
// spans lines still does; an escape Python doesn't know, or \N{…}, is kept
// as written, as Python keeps it.
func reencodePyLiteral(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) + 2)
	sb.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			writeEngineLiteralBody(&sb, s[i:i+1], false)
			continue
		}
		i++
		c := s[i]
		decoded := ""
		switch c {
		case '\n': // line continuation
		case '\\', '\'', '"':
			decoded = string(c)
		case 'a':
			decoded = "\a"
		case 'b':
			decoded = "\b"
		case 'f':
			decoded = "\f"
		case 'n':
			decoded = "\n"
		case 'r':
			decoded = "\r"
		case 't':
			decoded = "\t"
		case 'v':
			decoded = "\v"
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
			v, err := uint64(0), error(nil)
			if i+1+n <= len(s) {
				v, err = strconv.ParseUint(s[i+1:i+1+n], 16, 32)
			}
			if i+1+n > len(s) || err != nil || v > unicode.MaxRune {
				decoded = "\\" + string(c)
				break
			}
			decoded = string(rune(v))
			i += n
		default:
			if c >= '0' && c <= '7' {
				j := i
				for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7' {
					j++
				}
				v, _ := strconv.ParseUint(s[i:j], 8, 32)
				decoded = string(rune(v))
				i = j - 1
				break
			}
			decoded = "\\" + string(c)
		}
		writeEngineLiteralBody(&sb, decoded, true)
	}
	sb.WriteByte('\'')
	return sb.String()
}

// rewriteFilteredUnpackLoop rewrites the statement body when it is
// `for A, B in ITER if COND` (see the top of this file), using the n-th
// namespace name; nlBefore and nlAfter are newlines to keep line numbers.
// It reports false for any other statement (one loop variable, no filter,
// `recursive`), which is left alone.
func rewriteFilteredUnpackLoop(body, nlBefore, nlAfter string, n int) (string, bool) {
	if stmtKeyword(body) != "for" {
		return "", false
	}
	expr := strings.TrimSpace(body)
	expr = strings.TrimSpace(strings.TrimPrefix(expr, "for"))
	in := findTopLevelKeyword(expr, "in")
	if in < 0 {
		return "", false
	}
	vars := strings.Split(expr[:in], ",")
	if len(vars) != 2 {
		return "", false
	}
	a, b := strings.TrimSpace(vars[0]), strings.TrimSpace(vars[1])
	if !isIdent(a) || !isIdent(b) {
		return "", false
	}
	rest := strings.TrimSpace(expr[in+len("in"):])
	if findTopLevelKeyword(rest, "recursive") >= 0 {
		return "", false
	}
	ifAt := findTopLevelKeyword(rest, "if")
	if ifAt < 0 {
		return "", false
	}
	iter := strings.TrimSpace(rest[:ifAt])
	cond := strings.TrimSpace(rest[ifAt+len("if"):])
	if iter == "" || cond == "" {
		return "", false
	}
	ns := "__chat_loop" + strconv.Itoa(n)
	var sb strings.Builder
	sb.WriteString("{% " + nlBefore + "set " + ns + " = namespace(pairs=[]) %}")
	sb.WriteString("{% for " + a + ", " + b + " in " + iter + " %}")
	sb.WriteString("{% if " + cond + " %}")
	sb.WriteString("{% set " + ns + ".pairs = " + ns + ".pairs + [[" + a + ", " + b + "]] %}")
	sb.WriteString("{% endif %}{% endfor %}")
	sb.WriteString("{% for " + a + ", " + b + " in " + ns + ".pairs" + nlAfter + " %}")
	return sb.String(), true
}

// findTopLevelKeyword returns the index of keyword kw in s outside
// strings and brackets, as a whole word, or -1.
func findTopLevelKeyword(s, kw string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			i = skipString(s, i)
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
		case depth == 0 && strings.HasPrefix(s[i:], kw) &&
			(i == 0 || !isIdentByte(s[i-1])) &&
			(i+len(kw) == len(s) || !isIdentByte(s[i+len(kw)])):
			return i
		}
	}
	return -1
}

// skipString returns the index of the closing quote of the string literal
// starting at s[i], or len(s) when it is unterminated.
func skipString(s string, i int) int {
	q := s[i]
	for i++; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == q {
			return i
		}
	}
	return len(s)
}

// stmtKeyword is the first word of a statement body.
func stmtKeyword(body string) string {
	body = strings.TrimSpace(body)
	i := 0
	for i < len(body) && isIdentByte(body[i]) {
		i++
	}
	return body[:i]
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

func isIdent(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isIdentByte(s[i]) {
			return false
		}
	}
	return true
}
