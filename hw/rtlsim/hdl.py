"""Just enough SystemVerilog reading to instantiate FINN's generated wrapper modules.

The stitched top must tie off every input a block-design cell leaves open (AXI-lite, set selectors) and
relocate the memory files a wrapper names in its parameters, so it needs each wrapper's port directions
and string parameter defaults. FINN's wrapper templates all use ANSI headers, one declaration per item;
this reader handles exactly that form and raises on anything else rather than guessing. (Verilator can
dump elaborated ports too, but only after a full elaboration run, which would double the build time.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agq.errors import AgqError

_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_ATTRIBUTES = re.compile(r"\(\*.*?\*\)", re.S)
_MODULE = re.compile(r"\bmodule\s+(\w+)\s*(?:import\s+[^;]+;\s*)?")
_DIRECTIONS = ("input", "output", "inout")


@dataclass(frozen=True)
class ModuleHeader:
    """Ports (name -> direction, in declaration order) and string-valued parameter defaults."""

    name: str
    ports: dict[str, str]
    string_params: dict[str, str] = field(default_factory=dict)


def _balanced(text: str, start: int) -> tuple[str, int]:
    """The text inside the parenthesis opening at ``start`` and the index after its closing one."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    raise ValueError("unbalanced parenthesis")


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not nested inside (), [] or {}."""
    items, depth, current = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    items.append("".join(current).strip())
    return [item for item in items if item]


def read_module_headers(path: Path) -> dict[str, ModuleHeader]:
    """Every module header in one HDL file, by module name."""
    text = _ATTRIBUTES.sub(" ", _COMMENTS.sub(" ", path.read_text()))
    headers = {}
    for match in _MODULE.finditer(text):
        name, pos = match.group(1), match.end()
        try:
            string_params: dict[str, str] = {}
            if text[pos] == "#":
                params, pos = _balanced(text, text.index("(", pos))
                for item in _split_top_level(params):
                    param = re.search(r"(\w+)\s*=\s*\"([^\"]*)\"\s*$", item)
                    if param:
                        string_params[param.group(1)] = param.group(2)
                while text[pos].isspace():
                    pos += 1
            port_text, _ = _balanced(text, pos)
        except (ValueError, IndexError):
            raise AgqError(f"cannot read the header of module {name} in {path}") from None
        ports: dict[str, str] = {}
        direction = None
        for item in _split_top_level(port_text):
            first = item.split()[0]
            if first in _DIRECTIONS:
                direction = first
            names = re.findall(r"(\w+)\s*(?:\[[^\]]*\]\s*)*$", item)
            if direction is None or not names:
                raise AgqError(f"module {name} in {path}: port '{item}' is not an ANSI port declaration")
            ports[names[0]] = direction
        headers[name] = ModuleHeader(name, ports, string_params)
    return headers
