"""Changes agq makes to its BUILD COPY of finn-rtllib sources so that Verilator 5.48 accepts them.

The installed FINN files are never edited. Each fix names the file, the exact text it expects (so a
different FINN release fails loudly instead of being patched blindly) and why it is needed.
"""

from __future__ import annotations

import re
from pathlib import Path

from agq.errors import AgqError

# add_multi.sv declares the constant function init_leaf_loads() (and its return type) inside the
# generate block genTree. Verilator 5.48 rejects that ("Constant function may not be declared under
# generate"); Vivado accepts it. The function only depends on the module parameter N, so agq moves
# the typedef and the function to module scope, unchanged, right after the ports. N = 1 (no tree)
# still elaborates: the function is then never called.
_ADD_MULTI_FUNCTION = re.compile(
    r"\n(?P<body>[ \t]*typedef int unsigned\s+leaf_load_t\[2\*N-1\];\s*\n"
    r"[ \t]*function leaf_load_t init_leaf_loads\(\);.*?endfunction : init_leaf_loads[ \t]*\n)",
    re.S,
)
_ADD_MULTI_ANCHOR = "\tlocalparam int unsigned  L = $clog2(N);"
_ADD_MULTI_NOTE = (
    "\t// agq: moved here from generate block genTree because Verilator 5.48 rejects constant\n"
    "\t// functions declared under generate (see hw/rtlsim/rtllib_fixes.py).\n"
)


def _fix_add_multi(text: str, path: Path) -> str:
    match = _ADD_MULTI_FUNCTION.search(text)
    if match is None or text.count(_ADD_MULTI_ANCHOR) != 1:
        raise AgqError(
            f"{path}: not the add_multi.sv agq knows how to fix for Verilator "
            "(constant function init_leaf_loads under generate); check the FINN version"
        )
    text = text[: match.start()] + "\n" + text[match.end():]
    return text.replace(_ADD_MULTI_ANCHOR, _ADD_MULTI_NOTE + match.group("body") + "\n" + _ADD_MULTI_ANCHOR)


# fifo.sv computes its memory geometry with the constant function INIT_ABITS(), which returns the
# unpacked struct abits_t built from an assignment pattern. Verilator 5.48's constant evaluator cannot
# simulate unpacked struct patterns ("can't determine constant for FUNCREF 'INIT_ABITS'", node
# CONSPACKUORSTRUCT), so every StreamingFIFO_rtl fails to elaborate. Declaring the struct packed keeps
# the two int members and their use unchanged and makes it constant-evaluable.
_FIFO_STRUCT = "typedef struct {\n\t\tint unsigned  lo;\n\t\tint unsigned  hi;\n\t} abits_t;"


def _fix_fifo(text: str, path: Path) -> str:
    if text.count(_FIFO_STRUCT) != 1:
        raise AgqError(
            f"{path}: not the fifo.sv agq knows how to fix for Verilator (unpacked struct abits_t); "
            "check the FINN version"
        )
    return text.replace(
        _FIFO_STRUCT,
        "// agq: 'packed' added for Verilator 5.48's constant evaluator (see hw/rtlsim/rtllib_fixes.py).\n"
        "\t" + _FIFO_STRUCT.replace("struct {", "struct packed {"),
    )


_FIXES = {"mvu/add_multi.sv": _fix_add_multi, "fifo/hdl/fifo.sv": _fix_fifo}


def fixed_files(sources: list[Path]) -> list[str]:
    """The finn-rtllib files (relative to finn-rtllib) that agq compiles in a fixed copy."""
    return [rel for rel in _FIXES for src in sources if src.as_posix().endswith(f"finn-rtllib/{rel}")]


def build_copy_text(source: Path) -> str:
    """The text Verilator compiles for ``source``: the file itself, or agq's fixed copy of it."""
    text = source.read_text()
    for rel, fix in _FIXES.items():
        if source.as_posix().endswith(f"finn-rtllib/{rel}"):
            return fix(text, source)
    return text
