#!/usr/bin/env python3
"""Generate the Jinja chat-template goldens under tests/data/chat/ with
transformers (no torch): every real template of ../shared/chat_templates/ and
the chat_template of ../shared/tokenizers/qwen3/tokenizer_config.json rendered
over a message corpus, with and without add_generation_prompt, with thinking
undefined, on and off.

Writes
  tests/data/chat/templates/<name>.jinja   the templates, byte for byte
  tests/data/chat/jinja_goldens.json       [{"template", "messages",
      "add_generation_prompt", "kwargs", "bos_token", "eos_token", "text"} or
      ... "error": a phrase of transformers' error message}]

Rendering: transformers' own compiled template (chat_template_utils, the
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, its tojson,
raise_exception and strftime_now), called with `tools` left undefined, as
longflow calls it when no tools are given. For every template but Phi-4-mini
(which raises when tools=None, see the templates' README) the script checks
that transformers' render_jinja_template (tools=None) gives the same text.
strftime_now's clock is fixed at NOW (local time).

usage: python3 tools/gen_chat_jinja_goldens.py [--shared ../shared]
"""
import argparse
import datetime as dt
import json
import lzma
import os
import shutil

import transformers.utils.chat_template_utils as ctu

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "chat")
NOW = dt.datetime(2025, 6, 15, 12, 0, 0)

BOS_DS, EOS_DS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"
# template file -> (bos_token, eos_token, has a thinking switch)
TEMPLATES = {
    "Qwen3.jinja": (None, "<|im_end|>", True),
    "SmolLM2-Instruct.jinja": ("<|im_start|>", "<|im_end|>", False),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": (BOS_DS, EOS_DS, False),
    "deepseek-ai-DeepSeek-V3.1.jinja": (BOS_DS, EOS_DS, True),
    "mistralai-Mistral-Small-3.1-24B-Instruct-2503.jinja": ("<s>", "</s>", False),
    "GLM-4.6.jinja": (None, "<|endoftext|>", True),
    "moonshotai-Kimi-K2.jinja": (None, "<|im_end|>", False),
    "NVIDIA-Nemotron-Nano-v2.jinja": ("<SPECIAL_1>", "<SPECIAL_12>", False),
    "llama-cpp-microsoft-Phi-4-mini-instruct.jinja": (None, "<|endoftext|>", False),
}

THINK = "<think>\nThe user asks 2+2. That is 4.\n</think>\n\nThe answer is **4**."
ODD = ("Ünïcödé — 你好 🙂 \"double\" 'single' {{ braces }} {% tag %} {# c #}\n\n"
       "  indented\ttab \\ backslash\r\nCRLF /think end  ")

CORPUS = {
    "user": [{"role": "user", "content": "What is 2+2?"}],
    "system_user": [{"role": "system", "content": "You are a careful mathematician."},
                    {"role": "user", "content": "Prove that √2 is irrational."}],
    "multi_turn": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "What is 2+2?"},
                   {"role": "assistant", "content": THINK},
                   {"role": "user", "content": "And 3+3?"}],
    "no_system_multi": [{"role": "user", "content": "Hi!"},
                        {"role": "assistant", "content": "Hello. How can I help?"},
                        {"role": "user", "content": "Solve x^2 = 4.\n"},
                        {"role": "assistant", "content": "<think>x is ±2</think>x = 2 or x = -2."},
                        {"role": "user", "content": "Thanks /no_think"}],
    "last_assistant": [{"role": "user", "content": "What is 2+2?"},
                       {"role": "assistant", "content": THINK}],
    "odd_contents": [{"role": "system", "content": ODD},
                     {"role": "user", "content": ODD},
                     {"role": "assistant", "content": "<think>\n\n" + ODD + "\n</think>" + ODD},
                     {"role": "user", "content": "''\"\"{}[]()<>"}],
    "empty": [{"role": "user", "content": ""}],
    "two_users": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "tool_round": [{"role": "user", "content": "Weather in Zürich?"},
                   {"role": "assistant", "content": "",
                    "tool_calls": [{"id": "call_0123456789", "type": "function",
                                    "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}}]},
                   {"role": "tool", "tool_call_id": "call_0123456789", "content": "{\"temp\": 21.5}"},
                   {"role": "assistant", "content": "It is 21.5 °C."},
                   {"role": "user", "content": "Thanks"}],
}
# the same with the arguments as a JSON string (DeepSeek's templates concatenate them)
CORPUS["tool_round_str"] = json.loads(json.dumps(CORPUS["tool_round"]))
CORPUS["tool_round_str"][1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Zürich", "days": 2}'


# Language features one by one: (template, variables). Rendered by the same
# environment; a snippet that raises records the error.
SNIPPETS = [
    ("{% if x %}a{% elif y %}b{% else %}c{% endif %}", {"x": 0, "y": 1}),
    ("{% for m in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
     "{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}", {"xs": ["a", "b", "c"]}),
    ("{% for m in xs %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}", {"xs": [1, 2, 3]}),
    ("{% for m in xs %}x{% else %}empty{% endfor %}", {"xs": []}),
    ("{% for m in xs if m > 1 %}{{ m }}{{ loop.length }}{% endfor %}", {"xs": [1, 2, 3]}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}", {"d": {"b": 1, "a": [1, "x"]}}),
    ("{% for k in d %}{{ k }}{% endfor %}{% for c in 'héllo' %}[{{ c }}]{% endfor %}", {"d": {"z": 1, "y": 2}}),
    ("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("{% set ns = namespace(n=0, s='') %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% set t = i %}{% endfor %}"
     "{{ ns.n }}{{ t is defined }}", {}),
    ("{% set x %}block {{ 1 + 1 }}{% endset %}[{{ x }}]", {}),
    ("{% macro m(a, b='dflt') %}<{{ a }}|{{ b }}>{% endmacro %}{{ m(1) }}{{ m(2, b=3) }}{{ m('x', 'y') }}", {}),
    ("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}inside{% endcall %}", {}),
    ("{% raw %}{{ not evaluated }}{% endraw %}", {}),
    ("a  \n  {%- if true -%}  \n b \n  {%- endif -%} \n  c {{- ' d ' -}}  e", {}),
    ("line1\n    {% if true %}\n    inner\n    {% endif %}\nline2\n", {}),
    ("{%+ if true %}x{% endif +%}\n{# c #}\n  {# c2 #}\ny", {}),
    ("{{ 'a\\n\\t\\'q\\' \\u00e9 \\x41' }}|{{ \"dq\" }}|{{ 'adj' 'acent' }}", {}),
    ("{{ 1 + 2 * 3 - 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 10 / 4 }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ [1] + [2, 3] }} {{ 'x' + 'y' }}", {}),
    ("{{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 'b' > 'a' }} {{ [1,2] == [1,2] }} {{ none == none }}", {}),
    ("{{ true and 'x' }}|{{ false or 'y' }}|{{ not 0 }}|{{ 0 or '' }}|{{ 'a' in 'cat' }}|{{ 2 not in [1] }}|{{ 'k' in {'k': 1} }}", {}),
    ("{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 's' is string }}{{ {} is mapping }}{{ [] is iterable }}"
     "{{ 1 is number }}{{ true is number }}{{ [] is sequence }}{{ true is true }}{{ 0 is false }}{{ 3 is odd }}{{ 4 is even }}"
     "{{ 9 is divisibleby 3 }}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}{{ x is not none }}{{ 'a' is eq 'a' }}"
     "{{ 1 is sameas 1 }}{{ 'ab' is lower }}{{ 'AB' is upper }}", {"x": 1}),
    ("{{ 'a' if x else 'b' }}{{ 'c' if not x }}|{{ 'd' if x }}", {"x": 0}),
    ("{{ d.a }}{{ d['a'] }}{{ d.missing is defined }}{{ l[0] }}{{ l[-1] }}{{ l[5] is defined }}{{ s[1] }}{{ s[-1] }}",
     {"d": {"a": 1}, "l": [1, 2, 3], "s": "héllo"}),
    ("{{ l[1:] }}{{ l[:-1] }}{{ l[::-1] }}{{ l[::2] }}{{ s[::-1] }}{{ s[1:3] }}{{ s[-9:] }}{{ l[5:] }}{{ l[-2::-1] }}",
     {"l": [1, 2, 3, 4], "s": "héllo wörld 🙂!"}),
    ("{{ [1, 'a', none, true, 1.5, {'k': [2]}] }}|{{ {'a': 'it\\'s'} }}|{{ 1e20 }}|{{ 0.1 + 0.2 }}|{{ 1e-7 }}|{{ 123.0 }}", {}),
    ("{{ '  x y  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'héllo'|upper }}|{{ 'HÉ'|lower }}|{{ 'ab cd-ef'|title }}|{{ 'aBC dE'|capitalize }}"
     "|{{ 'aaa'|replace('a', 'b', 2) }}|{{ 'héllo'|length }}|{{ [1,2]|length }}|{{ {'a':1}|count }}", {}),
    ("{{ x|default('d') }}|{{ ''|default('e') }}|{{ ''|default('f', true) }}|{{ none|d('g', true) }}|{{ 0|d('h') }}", {}),
    ("{{ [1,2,3]|join(', ') }}|{{ ['a','b']|join }}|{{ l|join('/', attribute='n') }}|{{ [1,2]|first }}{{ [1,2]|last }}"
     "|{{ 'abc'|first }}{{ 'abc'|last }}", {"l": [{"n": "x"}, {"n": "y"}]}),
    ("{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='c')|list }}|{{ ms|rejectattr('role', 'eq', 'user')|list|length }}"
     "|{{ ms|selectattr('x')|list|length }}|{{ [0,1,2,'',none]|select|list }}|{{ [1,2,3,4]|reject('odd')|list }}"
     "|{{ ['a','B']|map('upper')|join }}|{{ ms|map(attribute='nope', default='-')|join }}",
     {"ms": [{"role": "user", "c": 1, "x": True}, {"role": "assistant", "c": 2}, {"role": "user", "c": 3}]}),
    ("{{ d|items|list }}|{{ 'ab'|list }}|{{ 12|string ~ 'x' }}|{{ '42'|int + 1 }}|{{ 'x'|int }}|{{ 3.9|int }}|{{ '2.5'|float }}"
     "|{{ [3,1,3]|unique|list }}|{{ [1,2]|reverse|list }}|{{ -3|abs }}|{{ {'b':1,'a':2}|dictsort }}", {"d": {"k": "v"}}),
    ("{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'é\"<>&\\n'|tojson }}|{{ [1, 2.5, none, true]|tojson }}|{{ {}|tojson }}"
     "|{{ d|tojson(separators=(',', ':')) }}|{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}",
     {"d": {"name": "f", "args": {"x": [1, {"y": "ü"}], "e": []}}}),
    ("{{ 'a,b,,c'.split(',') }}{{ ' a  b \\n c '.split() }}{{ 'a-b-c'.split('-', 1) }}{{ 'a-b-c'.rsplit('-', 1) }}"
     "|{{ '\\n\\nx\\n'.strip('\\n') }}|{{ '  x '.lstrip() }}|{{ ' x  '.rstrip() }}|{{ 'xyx'.strip('x') }}", {}),
    ("{{ 'hello'.startswith('he') }}{{ 'hello'.endswith(('x', 'lo')) }}{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}"
     "{{ 'aXbX'.replace('X', '-') }}{{ 'hello'.find('l') }}{{ 'hello'.count('l') }}{{ 'x{}y{}'.format(1, 'z') }}"
     "{{ 'a b'.title() }}{{ '12'.isdigit() }}{{ '/'.join(['a','b']) }}", {}),
    ("{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 5) }}{{ d.keys()|list }}{{ d.values()|list }}{{ d.items()|list }}",
     {"d": {"a": 1, "b": 2}}),
    ("{{ strftime_now('%Y-%m-%d %H:%M %A %B %j') }}", {}),
    ("{{ raise_exception('bad input: ' ~ x) }}", {"x": 3}),
    ("{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set d = dict(x=1, y='z') %}{{ d }}{% set l = [1, 2,] %}{{ l }}", {}),
    ("{{ undefined_var }}|{{ undefined_var.attr }}", {}),
    ("{% for x in none %}{% endfor %}", {}),
    ("{{ 'x' + 1 }}", {}),
    ("{{ messages[0].content.strip() }}{{ (messages|length) - 1 }}{{ messages[-1]['role'] }}",
     {"messages": [{"role": "user", "content": " hi "}]}),
    ("{% filter upper %}shout {{ 'this' }}{% endfilter %}", {}),
    ("{% generation %}gen{% endgeneration %}", {}),
    ("{{ ns.x }}{% set ns = namespace(x=1) %}{% set ns.y = 2 %}{{ ns.x }}{{ ns.y }}{{ ns }}", {}),
    ("{{ x is true }}{{ x is false }}{{ 1 is true }}", {"x": True}),
    ("{% if x is not defined %}{% set x = 'dflt' %}{% endif %}{{ x }}", {}),
    ("{%- for m in ms -%}\n  {{- m -}}\n{%- endfor %}\n\n  end", {"ms": [1, 2]}),
    ("{{ x|trim }}|{{ x|upper }}|{{ x|items|list }}|{{ x|reverse|list }}|{{ x|string }}|{{ x|replace('a', 'b') }}"
     "|{{ x|unique|list }}|{{ x|first is defined }}|{{ x|wordcount }}|{{ x|capitalize }}|{{ x|length }}|{{ x|join }}"
     "|{{ x|list }}|{{ x|selectattr('a')|list }}|{{ x|map(attribute='a')|list }}|{{ x|select|list }}", {}),
    ("{{ x|int }}", {}),
    ("{{ x|tojson }}", {}),
    ("{{ 'ab' in ['ab', 'c'] }}{{ 'x' in 'xyz' }}{{ 'tool_calls' in d }}{{ d.tool_calls is defined }}", {"d": {"role": "u"}}),
]


# Through longflow's chat API (lf_chat_render_json) with the real Qwen3
# tokenizer (tests/data/tokenizers/qwen3): the template, how the model
# directory ships it ("config": tokenizer_config.json's chat_template string,
# "list": its list-of-named-templates form, "file": chat_template.jinja),
# OpenAI-style messages, tools, chat_template_kwargs; text from transformers'
# render_jinja_template, ids from the tokenizers library.
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city, \"now\".",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
TOOL_MESSAGES = [
    {"role": "system", "content": "You help with the weather."},
    {"role": "user", "content": "Weather in Zürich?"},
    {"role": "assistant", "content": "", "reasoning_content": "I should call the tool.",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
    {"role": "tool", "content": "{\"temp\": 21}"},
]
API_CASES = [
    ("SmolLM2-Instruct.jinja", "file", CORPUS["user"], None, {}),
    ("SmolLM2-Instruct.jinja", "list", CORPUS["multi_turn"], None, {}),
    ("Qwen3.jinja", "config", TOOL_MESSAGES, TOOLS, {}),
    ("Qwen3.jinja", "config", CORPUS["multi_turn"], None, {"enable_thinking": False}),
    ("deepseek-ai-DeepSeek-V3.1.jinja", "file", CORPUS["user"], None, {"thinking": True}),
]


def api_cases(texts, qwen3_tokenizer):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(lzma.open(qwen3_tokenizer, "rt", encoding="utf-8").read())
    out = []
    for name, how, messages, tools, kwargs in API_CASES:
        bos, eos, _ = TEMPLATES[name]
        extra = dict(kwargs)
        # longflow passes enable_thinking (true unless --no-think) and the tokenizer's own bos/eos
        extra.setdefault("enable_thinking", True)
        extra["eos_token"] = "<|im_end|>"
        outs, _ = ctu.render_jinja_template(conversations=[messages], tools=tools, chat_template=texts[name],
                                            add_generation_prompt=True, **extra)
        text = outs[0]
        out.append({"template": name, "ship": how, "messages": messages, "tools": tools, "kwargs": kwargs,
                    "text": text, "ids": tok.encode(text, add_special_tokens=False).ids})
    return out


class FixedClock(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


def render(template, messages, agp, kwargs, bos, eos):
    ctu.datetime = FixedClock
    compiled = ctu._compile_jinja_template(template)
    extra = dict(kwargs)
    if bos is not None:
        extra["bos_token"] = bos
    if eos is not None:
        extra["eos_token"] = eos
    return compiled.render(messages=messages, add_generation_prompt=agp, **extra)


def cross_check(template, messages, agp, kwargs, bos, eos, text):
    extra = dict(kwargs)
    if bos is not None:
        extra["bos_token"] = bos
    if eos is not None:
        extra["eos_token"] = eos
    out, _ = ctu.render_jinja_template(conversations=[messages], tools=None, chat_template=template,
                                       add_generation_prompt=agp, **extra)
    assert out[0] == text, "render_jinja_template differs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(OUT), "..", "..", "..", "shared"))
    args = ap.parse_args()
    src = os.path.join(args.shared, "chat_templates")
    tdir = os.path.join(OUT, "templates")
    os.makedirs(tdir, exist_ok=True)
    texts = {}
    for name in TEMPLATES:
        shutil.copyfile(os.path.join(src, name), os.path.join(tdir, name))
        with open(os.path.join(src, name), encoding="utf-8", newline="") as f:
            texts[name] = f.read()
    with open(os.path.join(args.shared, "tokenizers", "qwen3", "tokenizer_config.json"), encoding="utf-8") as f:
        assert json.load(f)["chat_template"] == texts["Qwen3.jinja"], "Qwen3.jinja is the tokenizer_config template"
    cases = []
    for name, (bos, eos, thinking) in TEMPLATES.items():
        switches = [{}, {"enable_thinking": True}, {"enable_thinking": False}] if thinking else [{}]
        for conv, messages in CORPUS.items():
            for agp in (True, False):
                for kw in switches:
                    case = {"template": name, "conversation": conv, "messages": messages,
                            "add_generation_prompt": agp, "kwargs": kw, "bos_token": bos, "eos_token": eos}
                    try:
                        case["text"] = render(texts[name], messages, agp, kw, bos, eos)
                        if not name.startswith("llama-cpp-microsoft-Phi"):
                            cross_check(texts[name], messages, agp, kw, bos, eos, case["text"])
                    except Exception as e:  # the template raised: longflow must raise too
                        case["error"] = str(e)[:60]
                    cases.append(case)
    snippets = []
    for tmpl, variables in SNIPPETS:
        snip = {"template": tmpl, "vars": variables}
        try:
            ctu.datetime = FixedClock
            snip["text"] = ctu._compile_jinja_template(tmpl).render(**variables)
        except Exception as e:
            snip["error"] = str(e)[:60]
        snippets.append(snip)
    with open(os.path.join(OUT, "jinja_goldens.json"), "w", encoding="utf-8") as f:
        api = api_cases(texts, os.path.join(OUT, "..", "tokenizers", "qwen3", "tokenizer.json.xz"))
        json.dump({"now": NOW.strftime("%Y-%m-%d %H:%M:%S"), "cases": cases, "snippets": snippets, "api": api}, f,
                  ensure_ascii=False, indent=1)
    errors = sum("error" in c for c in cases)
    print(f"{len(cases)} cases ({errors} raise) -> {OUT}/jinja_goldens.json")


if __name__ == "__main__":
    main()
