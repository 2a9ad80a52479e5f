#!/usr/bin/env python3
"""Regenerates this folder's reference files with Python's Jinja2 set up the
way transformers' apply_chat_template sets it up (see shared/templates/
README.md): ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks,
loopcontrols and {% generation %}), tojson = json.dumps(ensure_ascii=False, ...), raise_exception,
strftime_now frozen at 2024-07-26.

    python3 gen_testdata.py /path/to/shared/templates

writes extra_renderings.json (the shared templates on tool-calling, unicode
and thinking conversations), snippets.json (small templates, one Jinja
feature each) and whitespace.json (random mixes of text and tags with every
whitespace-control marker). Not run by the tests; needs jinja2 (tested with 3.1.6).
"""
import datetime
import json
import os
import sys

from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime(2024, 7, 26).strftime(fmt)


class AssistantTracker(Extension):
    """transformers' {% generation %} block, reduced to what it prints: its
    body, unchanged."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def env():
    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    e.globals["strftime_now"] = strftime_now
    return e


def render(src, ctx):
    try:
        return {"rendered": env().from_string(src).render(**ctx)}
    except TemplateError as e:  # includes UndefinedError, TemplateSyntaxError
        return {"error": str(e), "error_type": type(e).__name__}
    except Exception as e:
        return {"error": str(e), "error_type": type(e).__name__}


WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "description": "Get the current weather — in °C <or> °F & more",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "City, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "max": {"type": "integer", "default": 5},
        "threshold": {"type": "number", "default": 0.5}},
        "required": ["query"]},
    "return": {"type": "string"}}}

CALL = {"id": "call12345", "type": "function", "function": {
    "name": "get_weather", "arguments": {"location": "Zürich", "unit": "celsius"}}}
CALL_STR = {"id": "abcdef123", "type": "function", "function": {
    "name": "search", "arguments": "{\"query\": \"jinja\"}"}}
CALL_RICH = {"id": "rich00001", "type": "function", "function": {
    "name": "search", "arguments": {"query": "a \"quoted\"\n\ttab <b>&</b> é 🚀 \u0001",
                                    "max": 3, "threshold": 1.0, "ratio": 0.25, "big": 1e20,
                                    "tiny": 1e-07, "flags": [True, False, None], "nested": {"z": 1, "a": []}}}}

CONVERSATIONS = {
    "tools_question": ([{"role": "user", "content": "What's the weather in Zürich?"}],
                       {"tools": [WEATHER, SEARCH]}),
    "tool_roundtrip": ([{"role": "system", "content": "You are a weather bot."},
                        {"role": "user", "content": "Weather in Zürich?"},
                        {"role": "assistant", "content": "", "tool_calls": [CALL]},
                        {"role": "tool", "content": "{\"temp\": 21, \"sky\": \"clear\"}", "tool_call_id": "call12345", "name": "get_weather"},
                        {"role": "assistant", "content": "It is 21 °C and clear."},
                        {"role": "user", "content": "Thanks!"}],
                       {"tools": [WEATHER]}),
    "tool_string_args": ([{"role": "user", "content": "Search jinja"},
                          {"role": "assistant", "content": "", "tool_calls": [CALL_STR]},
                          {"role": "tool", "content": "Jinja is a template engine.", "tool_call_id": "abcdef123"}],
                         {"tools": [SEARCH]}),
    "tool_rich_args": ([{"role": "user", "content": "Search"},
                        {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL_RICH]},
                        {"role": "tool", "content": "nothing", "tool_call_id": "rich00001"}],
                       {"tools": [SEARCH], "tools_in_user_message": False}),
    "two_tool_calls": ([{"role": "user", "content": "Both"},
                        {"role": "assistant", "content": "", "tool_calls": [CALL, CALL_STR]}],
                       {"tools": [WEATHER, SEARCH]}),
    "bad_tool_call_id": ([{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "", "tool_calls": [{"id": "short", "type": "function", "function": {"name": "search", "arguments": {"query": "x"}}}]}],
                         {}),
    "unicode_whitespace": ([{"role": "system", "content": "  Réponds en français. <b>&'\"  "},
                            {"role": "user", "content": "  日本語で {{ hello }} {% raw %} \u2028 emoji 🚀\n\n"}], {}),
    "thinking_history": ([{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "<think>\nsimple sum\n</think>\n\n4"},
                          {"role": "user", "content": "3+3?"},
                          {"role": "assistant", "content": "6", "reasoning_content": "add three"}], {}),
    "no_think_system": ([{"role": "system", "content": "Be brief. /no_think"}, {"role": "user", "content": "Hi"}], {}),
    "enable_thinking_false": ([{"role": "user", "content": "Hi"}], {"enable_thinking": False}),
    "date_and_builtin_tools": ([{"role": "user", "content": "Date?"}],
                               {"date_string": "01 Jan 2025", "builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}),
    "consecutive_users": ([{"role": "user", "content": "one"}, {"role": "user", "content": "two"}], {}),
    "assistant_first": ([{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hi"}], {}),
}

SNIPPETS = [
    ("trim_filter", "[{{ s | trim }}]", {"s": "  a b \n"}),
    ("str_upper_lower", "{{ s.upper() }} {{ s.lower() }}", {"s": "Hello World"}),
    ("str_split", "{{ s.split(',') | join('|') }} {{ s.split(',') | length }} {{ 'a  b c'.split() | join('+') }}", {"s": "a,b,,c"}),
    ("str_split_last", "{{ s.split('</think>')[-1].lstrip('\\n') }}", {"s": "<think>x</think>\n\nanswer"}),
    ("str_strip_args", "[{{ ' x '.strip() }}][{{ 'xxhixx'.strip('x') }}][{{ '\\n\\nhi'.lstrip('\\n') }}][{{ 'hi  '.rstrip() }}][{{ 'hi\\n'.rstrip('\\n') }}]", {}),
    ("str_title_capitalize", "{{ s.title() }}|{{ s | title }}|{{ s | capitalize }}", {"s": "hello wORLD"}),
    ("str_startswith_endswith", "{{ s.startswith('ab') }} {{ s.endswith('bc') }} {{ s.startswith('x') }}", {"s": "abc"}),
    ("str_replace_method", "{{ s.replace('/think', '') }}|{{ s | replace('a', 'A') }}", {"s": "a /think b"}),
    ("str_in", "{{ 'x' in s }} {{ 'q' in s }} {{ 'q' not in s }}", {"s": "xyz"}),
    ("str_concat_tilde", "{{ 'a' ~ 1 ~ none }}|{{ 'a' + 'b' }}", {}),
    ("str_escapes", "{{ 'tab\\there' }}|{{ \"q\\\"uote\" }}|{{ 'nl\\nx' }}", {}),
    ("namespace_counter", "{% set ns = namespace(x=0, found=false) %}{% for i in range(4) %}{% set ns.x = ns.x + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.x }} {{ ns.found }}", {}),
    ("loop_vars", "{% for x in items %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}|{% endfor %}", {"items": ["a", "b", "c"]}),
    ("loop_previtem", "{% for x in items %}{{ loop.previtem | default('-') }}{{ loop.nextitem | default('-') }} {% endfor %}", {"items": [1, 2, 3]}),
    ("loop_filter_single", "{% for m in msgs if m.role != 'system' %}{{ loop.index }}{{ m.role }}{{ loop.last }} {% endfor %}", {"msgs": [{"role": "system"}, {"role": "user"}, {"role": "assistant"}]}),
    ("loop_filter_unpack", "{% for k, v in d.items() if k != 'return' %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% else %}empty{% endfor %}", {"d": {"name": "f", "return": "x", "description": "d"}}),
    ("loop_filter_unpack_empty", "{% for k, v in d.items() if k == 'zzz' %}{{ k }}{% else %}empty{% endfor %}", {"d": {"a": 1}}),
    ("loop_break_continue", "{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("loop_else", "{% for x in [] %}{{ x }}{% else %}none{% endfor %}", {}),
    ("loop_string_iteration", "{% for c in 'abc' %}{{ c }}-{% endfor %}", {}),
    ("reversed_slice", "{% for m in items[::-1] %}{{ m }}{% endfor %} {{ items[1:] | join }} {{ items[-1] }} {{ 'hello'[1:3] }} {{ items[:-1] | join }}", {"items": ["a", "b", "c"]}),
    ("tests_types", "{{ s is string }} {{ d is mapping }} {{ l is iterable }} {{ l is sequence }} {{ n is number }} {{ z is none }} {{ u is defined }} {{ b is boolean }} {{ s is mapping }} {{ d is string }}", {"s": "x", "d": {"a": 1}, "l": [1], "n": 3, "z": None, "b": True}),
    ("test_false_true", "{{ f is false }} {{ t is true }} {{ f is true }} {{ u is false }}", {"f": False, "t": True}),
    ("test_not_defined", "{% if x is not defined %}undef{% endif %}{% if not y is defined %}Y{% endif %}[{{ x }}]", {}),
    ("dict_items_loop", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for k, v in d | items %}{{ k }};{% endfor %}", {"d": {"b": 1, "a": 2, "c": 3}}),
    ("dict_keys_values", "{{ d.keys() | list | join(',') }} {{ d.values() | list | join(',') }}", {"d": {"b": 1, "a": 2}}),
    ("dict_get", "{{ d.get('a') }} {{ d.get('zz', 'dflt') }} {{ d['a'] }} {{ 'a' in d }} {{ 'zz' in d }}", {"d": {"a": 1}}),
    ("dict_literal_order_tojson", "{{ {'b': 1, 'a': [1, 2.5, none, true]} | tojson }}", {}),
    ("dictsort", "{% for k, v in d | dictsort %}{{ k }}{{ v }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("print_none_bool", "[{{ none }}][{{ true }}][{{ false }}][{{ z }}]", {"z": None}),
    ("print_numbers", "{{ 1 }} {{ 1.0 }} {{ 1.5 }} {{ 10 / 4 }} {{ 10 // 4 }} {{ 10 % 3 }} {{ 2 ** 10 }} {{ -3 }} {{ 4 / 2 }}", {}),
    ("print_list_dict", "{{ l }} {{ d }}", {"l": [1, "a", None, True], "d": {"k": "v"}}),
    ("string_repeat", "{{ 'ab' * 3 }}", {}),
    ("set_block", "{% set x %}block {{ 1 + 1 }}{% endset %}[{{ x }}]", {}),
    ("macro", "{% macro f(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ f(1) }}{{ f(1, b=2) }}{{ f('x', 'y') }}", {}),
    ("ws_lstrip_trim", "  {% if true %}\nX\n  {% endif %}\nY\n    {%- if true %}\nZ{% endif %}", {}),
    ("ws_explicit", "a  {{- ' b ' -}}  c\n{{ 'd' }}\n{%- if true -%}\n e \n{%- endif -%}\n f", {}),
    ("ws_trailing_newline", "hello\n", {}),
    ("ws_trailing_two_newlines", "hello\n\n", {}),
    ("ws_comment", "a\n{# c #}\nb\n  {#- c2 -#}  \nc", {}),
    ("filter_join_length_first_last", "{{ l | join(', ') }}|{{ l | length }}|{{ l | first }}|{{ l | last }}|{{ l | count }}", {"l": ["x", "y", "z"]}),
    ("filter_selectattr_map", "{{ msgs | selectattr('role', 'equalto', 'user') | list | length }} {{ msgs | map(attribute='role') | join(',') }} {{ msgs | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list | join(',') }}", {"msgs": [{"role": "user"}, {"role": "assistant"}, {"role": "user"}]}),
    ("filter_reject_select", "{{ l | reject('equalto', 2) | list | join }} {{ l | select('odd') | list | join }} {{ tools | reject('equalto', 'code_interpreter') | join(', ') }}", {"l": [1, 2, 3], "tools": ["a", "code_interpreter", "b"]}),
    ("filter_default", "{{ x | default('d') }} {{ '' | default('d', true) }} {{ '' | default('d') }} {{ y | d('yy') }}", {}),
    ("filter_int_string", "{{ '3' | int + 1 }} {{ 5 | string + 'a' }} {{ 2.7 | int }} {{ '2.5' | float }}", {}),
    ("filter_misc", "{{ l | sum }} {{ l | max }} {{ l | min }} {{ l | reverse | list | join }} {{ l | sort | join }} {{ l | unique | list | join }} {{ range(3) | list | join }}", {"l": [3, 1, 2, 3]}),
    ("filter_indent", "{{ 'a\\nb' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}", {}),
    ("cond_expr", "{{ 'a' if x else 'b' }} {{ x or 'fallback' }} {{ 'y' if not x }}|{{ t and 'both' }}", {"t": True}),
    ("comparisons", "{{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 2 > 1 >= 1 }} {{ 'a' != 'b' }} {{ none == none }}", {}),
    ("attr_and_item", "{{ m.content }} {{ m['role'] }} {{ m.missing }}[{{ m['missing'] }}]", {"m": {"role": "user", "content": "hi"}}),
    ("undefined_attr_error", "{{ x.y }}", {}),
    ("raise_exception", "a{{ raise_exception('boom ' ~ 1) }}b", {}),
    ("raise_exception_in_if", "{% if true %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}", {}),
    ("strftime_now", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %A %B %-d %j %I%p %H:%M:%S %y %e %a') }}", {}),
    ("tojson_basic", "{{ v | tojson }}", {"v": {"s": "é <b>&'\"\n\t\u0001\u007f\u2028🚀", "i": 3, "f": 1.0, "g": 0.1, "h": 1e20, "t": 1e-07, "n": None, "b": [True, False], "e": {}, "l": []}}),
    ("tojson_indent", "{{ v | tojson(indent=4) }}\n{{ v | tojson(indent=2) }}", {"v": {"b": 1, "a": {"x": [1, {"y": []}], "e": {}}, "u": "é<>"}}),
    ("tojson_ensure_ascii", "{{ v | tojson(ensure_ascii=True) }}", {"v": ["é", "🚀", "\u007f", "<>"]}),
    ("tojson_sort_separators", "{{ v | tojson(sort_keys=True) }}|{{ v | tojson(separators=(',', ':')) }}|{{ v | tojson(indent=2, separators=(', ', ' = ')) }}", {"v": {"b": [1, 2], "a": "x"}}),
    ("tojson_scalars", "{{ none | tojson }} {{ 'x' | tojson }} {{ 1.5 | tojson }} {{ true | tojson }} {{ [] | tojson }}", {}),
    ("tojson_string_slice", "{% set out = f | tojson %}{{ out[:-1] }}, \"id\": 1}", {"f": {"name": "n", "arguments": {"a": 1}}}),
    ("tojson_in_string_literal", "{{ '| tojson' }} {{ \"x | tojson\" }}", {}),
    ("items_filter_tojson_pipeline", "{% for k, v in d.items() %}{{ k }}: {{ v | tojson }}; {% endfor %}", {"d": {"b": {"x": 1}, "a": "s"}}),
    ("is_defined_on_message_keys", "{% for m in msgs %}{{ m.tool_calls is defined }}{{ 'tool_calls' in m }}{{ m.content is string }} {% endfor %}", {"msgs": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": []}]}),
    ("messages_slicing_set", "{% set messages = msgs[1:] %}{% for m in messages %}{{ m }}{% endfor %}", {"msgs": ["a", "b", "c"]}),
    ("scoping_set_in_loop", "{% set x = 1 %}{% for i in range(2) %}{% set x = x + 10 %}{{ x }} {% endfor %}{{ x }}", {}),
    ("string_format_operator", "{{ '%s-%d' % ('a', 1) }}", {}),
    ("format_filter", "{{ '%d items' | format(3) }}", {}),
    ("list_append", "{% set l = [] %}{% set _ = l.append(1) %}{{ l }}", {}),
    ("raw_block", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}", {}),
    ("str_literal_escapes", r"""{{ '\x41\u00e9\101\U0001F680|\q|a\\b|\'|\"|\t' }}|{{ "multi
line" }}|{{ 'a\
b' }}""", {}),
    ("nested_braces_in_tag", "{{ {'a': {'b': 1}} | tojson }}|{{ '}}' }}|{% set d = {'x': {'y': '%}'}} %}{{ d.x.y }}|{{ {'k': 1}}}", {}),
    ("tojson_spellings", "{{ v | tojson }}{{ v|tojson }}{{ v |  tojson(indent=1) }}{{ v | tojson | length }}", {"v": {"k": [1]}}),
    ("generation_block", "{% for m in msgs %}\n  {%- if m == 'a' %}\n    {% generation %}<{{ m }}>\n{% endgeneration %}\n  {%- else %}[{{ m }}]{% endif %}\n{% endfor %}", {"msgs": ["u", "a", "u"]}),
    ("macro_recursion", "{% macro f(n) %}{% if n < 20 %}{{ f(n + 1) }}{% else %}{{ n }}{% endif %}{% endmacro %}{{ f(0) }}{{ f(5) }}", {}),
    ("macro_recursion_unbounded", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {}),
    ("range_variants", "{{ range(3) | list }}{{ range(1, 7, 2) | list }}{{ range(5, 0, -2) | list }}{{ range(0) | list }}{{ range(100000) | length }}", {}),
    ("range_too_big", "{% for i in range(100001) %}{% endfor %}", {}),
    ("int_float_arith", "{{ 1 + 1.5 }} {{ 3 - 1 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }}", {}),
]


def random_whitespace_templates(n, seed=20240726):
    """Random mixes of text and tags with every whitespace-control marker,
    to pin down trim_blocks / lstrip_blocks / - / + handling."""
    import random
    rnd = random.Random(seed)
    texts = ["", " ", "  ", "\t", "\n", "\n\n", "  \n", "\n  ", "a", "a ", " a", "a\n", "\na", "b\n  ", "\n\t ", " \u3000", "\r\n", "x y"]

    def mark(allowed):
        return rnd.choice(allowed)

    def tag(body, kind="%"):
        closers = {"%": ("%}", ["", "-", "+"]), "{": ("}}", ["", "-"]), "#": ("#}", ["", "-", "+"])}
        close, rmarks = closers[kind]
        return "{" + kind + mark(["", "-", "+"]) + " " + body + " " + mark(rmarks) + close

    def block(depth):
        out = []
        for _ in range(rnd.randint(1, 5)):
            out.append(rnd.choice(texts))
            r = rnd.random()
            if r < 0.25:
                out.append(tag("'v'", "{"))
            elif r < 0.4:
                out.append(tag("c", "#"))
            elif r < 0.5:
                out.append(tag("set x = 1"))
            elif r < 0.6:
                out.append("{%" + mark(["", "-", "+"]) + " raw " + mark(["", "-"]) + "%}" + rnd.choice(texts) + "{{ y }}" + rnd.choice(texts) + tag("endraw"))
            elif depth < 3:
                if rnd.random() < 0.5:
                    out.append(tag("if true"))
                    out.extend(block(depth + 1))
                    if rnd.random() < 0.3:
                        out.append(rnd.choice(texts))
                        out.append(tag("else"))
                        out.extend(block(depth + 1))
                    out.append(rnd.choice(texts))
                    out.append(tag("endif"))
                else:
                    out.append(tag("for i in [1, 2]"))
                    out.extend(block(depth + 1))
                    out.append(rnd.choice(texts))
                    out.append(tag("endfor"))
        out.append(rnd.choice(texts))
        return out

    return ["".join(block(0)) + rnd.choice(["", "\n", "\n\n", " \n"]) for _ in range(n)]


def dump_lines(path, recs):
    """One JSON record a line: compact, and diffs stay readable."""
    with open(path, "w") as f:
        f.write("[\n")
        f.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in recs))
        f.write("\n]\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    shared = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    toks = {r["template"]: (r["bos_token"], r["eos_token"])
            for r in json.load(open(os.path.join(shared, "renderings.json")))}
    recs = []
    for cid, (msgs, extra) in CONVERSATIONS.items():
        for name in sorted(os.listdir(os.path.join(shared, "templates"))):
            src = open(os.path.join(shared, "templates", name)).read()
            bos, eos = toks[name]
            for agp in (True, False):
                vars = {"tools": None, "documents": None}
                vars.update(extra)
                ctx = dict(messages=msgs, add_generation_prompt=agp)
                if bos is not None:
                    ctx["bos_token"] = bos
                if eos is not None:
                    ctx["eos_token"] = eos
                ctx.update(vars)
                rec = {"template": name, "conversation": cid, "add_generation_prompt": agp,
                       "bos_token": bos, "eos_token": eos, "messages": msgs, "extra_vars": vars}
                rec.update(render(src, ctx))
                recs.append(rec)
    dump_lines(os.path.join(here, "extra_renderings.json"), recs)
    snips = []
    for name, src, vars in SNIPPETS:
        rec = {"name": name, "template": src, "vars": vars}
        rec.update(render(src, vars))
        snips.append(rec)
    dump_lines(os.path.join(here, "snippets.json"), snips)
    ws = []
    for i, src in enumerate(random_whitespace_templates(300)):
        rec = {"name": "ws%03d" % i, "template": src, "vars": {}}
        rec.update(render(src, {}))
        ws.append(rec)
    dump_lines(os.path.join(here, "whitespace.json"), ws)
    print(len(recs), "renderings,", len(snips), "snippets,", len(ws), "whitespace templates")


main()
