#!/usr/bin/env python3
"""Writes jinja-cases.json: small templates and what real Jinja2 renders for them, in the environment transformers
renders chat templates with (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, tojson with
ensure_ascii=False). Needs a Python with jinja2 (not Debian's python3); the JSON is checked in, the tests only read it.
"""
import json

from jinja2.sandbox import ImmutableSandboxedEnvironment

VARIABLES = {
    "xs": [1, 2, 3, 4],
    "d": {"b": 1, "a": [True, None, "x\"y"], "c": {"k": "ü"}},
    "x": "X",
    "ms": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
}

TEMPLATES = [
    "  {% if true %}\n    yes\n  {% endif %}\nafter",
    "{%- for x in xs -%} {{ x }} {%- endfor %}|",
    "{% for x in xs %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}",
    "{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}",
    "{% set y = 1 %}{% for x in xs %}{% set y = x %}{% endfor %}{{ y }}",
    "{{ ' a b '|trim }}|{{ xs|length }}|{{ xs|join('-') }}|{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'abc'|upper }}|{{ xs|first }}|{{ xs|last }}|{{ none|default('z') }}|{{ nothing|default('z') }}|{{ ''|default('z', true) }}",
    "{{ 'a,b,,c'.split(',') }}|{{ '  x '.strip() }}|{{ 'hello'.startswith('he') }}|{{ 'xxhixx'.strip('x') }}|{{ 'a b  c'.split() }}|{{ 'Hello'.endswith(('lo', 'x')) }}|{{ 'a-b-c'.split('-', 1) }}|{{ 'ab'.upper() }}|{{ 'hello world'.title() }}|{{ 'aXa'.replace('a', 'b') }}",
    "{{ xs[1:] }}|{{ xs[::-1] }}|{{ xs[-1] }}|{{ 'hello'[1:3] }}|{{ xs[:-1] }}|{{ xs[10] is defined }}|{{ 'hello'[::-1] }}",
    "{{ x is defined }}|{{ y is defined }}|{{ none is none }}|{{ 's' is string }}|{{ d is mapping }}|{{ xs is iterable }}|{{ 3 is odd }}|{{ 4 is divisibleby 2 }}|{{ x is not none }}|{{ d.c.k is defined }}|{{ d.zz is defined }}|{{ 1 is number }}|{{ xs is sequence }}",
    "{{ 7 // 2 }}|{{ 7 / 2 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|{{ 1 + 2 * 3 }}|{{ 'a' ~ 1 ~ none }}|{{ 1 == 1.0 }}|{{ 'b' in 'abc' }}|{{ 3 not in xs }}|{{ 1 < 2 < 3 }}|{{ [1] + [2] }}|{{ 0.1 + 0.2 }}|{{ 1e-6 }}|{{ 2.0 }}|{{ -xs[0] }}|{{ 10 - 2 - 3 }}|{{ not true or true }}|{{ 'ab' * 2 }}",
    "{{ 'yes' if x else 'no' }}|{{ 'yes' if y }}|{{ 'a' if false else 'b' if true else 'c' }}|",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{{ d.get('b') }}{{ d.get('q', 'dflt') }}{{ d['c']['k'] }}{{ d.keys()|list }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', '?') }} {{ greet(name='Cy') }}",
    "{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for x in [] %}a{% else %}empty{% endfor %}|{% for x in xs if x > 1 %}{{ x }}{{ loop.index }}{% endfor %}",
    "a {# comment #}\nb\n{# c2 #}\nc\n  {#- c3 -#}  \nd",
    "{% raw %}{{ not parsed }}{% endraw %}\nx",
    "{{ xs }}|{{ d }}|{{ none }}|{{ true }}|{{ \"it's\" }}|{{ [\"it's\", 'a\"b', 'c'] }}|{{ nothing }}|{{ (1, 2) }}",
    "{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }}|{{ ms|map(attribute='role')|list }}|{{ ms|rejectattr('role', 'eq', 'user')|list|length }}",
    "{% set s %}inner {{ x }}{% endset %}[{{ s }}]",
    "<ul>\n    {% for x in xs %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>",
    "{{- '  a  ' -}}   {{ 'b' }}  {%+ if true %}c{% endif %}\n  {%- if true %} d {% endif -%}\n  e",
    "{% for x in xs %}{{ loop.revindex0 }}{{ loop.previtem|default('-') }}{{ loop.first }}{% endfor %}",
    "{{ 'a\\nb' }}|{{ \"tab\\there\" }}|{{ 'q\\'s' }}|{{ 'con' 'cat' }}",
    "{{ [3, 1, 2]|sort }}|{{ d|dictsort|first }}|{{ xs|reverse|list }}|{{ xs|sum }}|{{ [1, 2, 2]|unique|list }}|{{ ['b', 'A', 'c']|sort }}|{{ xs|max }}|{{ xs|min }}",
    "{{ '42'|int + 1 }}|{{ 3.7|int }}|{{ 2|float }}|{{ 2.567|round(2) }}|{{ -3|abs }}|{{ 'x'|string }}|{{ xs|string }}|{{ 'a\\nb'|indent(2) }}|{{ 'a b c'|wordcount }}",
    "{% if x == 'X' %}1{% elif x == 'Y' %}2{% else %}3{% endif %}{% if not y %}4{% endif %}{% if xs|length > 3 and x %}5{% endif %}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (a, b) %}{{ t[1] }}{% set l = [a, b][::-1] %}{{ l }}",
    "{%- set ns = namespace(found=false) -%}\n{%- for m in ms -%}\n  {%- if m.role == 'assistant' -%}\n    {%- set ns.found = true -%}\n  {%- endif -%}\n{%- endfor -%}\n{{ ns.found }}",
    "{% for m in ms %}{{ m['role'][0]|upper }}{{ m.content }}{% if not loop.last %} {% endif %}{% endfor %}",
    "{{ {'k': 'v', 'n': [1, 2.5, none]}|tojson }}|{{ 'é\"\\n'|tojson }}|{{ xs|tojson(indent=1) }}|{{ {}|tojson }}|{{ []|tojson(indent=2) }}",
    "   {% for x in xs %}\n\t{{ x }}\n   {% endfor %}   \n end",
]


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = tojson
cases = [{"template": t, "expected": env.from_string(t).render(**VARIABLES)} for t in TEMPLATES]
with open("jinja-cases.json", "w", encoding="utf-8") as f:
    json.dump({"variables": VARIABLES, "cases": cases}, f, ensure_ascii=False, indent=1)
    f.write("\n")
