"""Read FINN's IP-integrator TCL for one node into cells, source files and connections.

Every FINN RTL node describes how Vivado should assemble it (``code_generation_ipi``): which source
files to add, which module cells to create (a MVAU in ``internal_decoupled`` mode is a hierarchy of the
compute wrapper plus a ``memstream`` weight streamer) and how their pins connect. Interpreting that
description, instead of re-encoding each node type here, keeps agq's stitched top wired exactly as FINN
would wire the block design. Only the block-design subset FINN emits for RTL nodes is understood; any
other command (an HLS or Xilinx IP, for example) is an :class:`AgqError` naming the node and command.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from agq.errors import AgqError

_BRACKETED = re.compile(r"\[get_bd_(intf_pins|pins|cells)\s+([^\]]+)\]")


@dataclass
class Cell:
    """A module instance: ``path`` is ``node`` or ``node/sub`` as in the block design."""

    path: str
    module: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeAssembly:
    """How one node is built: cells, sources and the pin-to-pin connections inside it.

    A pin is ``(cell path, pin name)``; the node's own boundary pins use the node name as cell path,
    which is also the path of the single cell of a non-hierarchical node.
    """

    node: str
    sources: list[Path] = field(default_factory=list)
    cells: dict[str, Cell] = field(default_factory=dict)
    nets: list[tuple[tuple[str, str], tuple[str, str]]] = field(default_factory=list)
    intf_nets: list[tuple[tuple[str, str], tuple[str, str]]] = field(default_factory=list)


def _pin(ref: str) -> tuple[str, str]:
    """``node/cell/pin`` or ``/node/pin`` -> (cell path, pin)."""
    parts = ref.strip("/").split("/")
    if len(parts) < 2:
        raise ValueError(ref)
    return "/".join(parts[:-1]), parts[-1]


def read_ipi(node: str, commands: list[str]) -> NodeAssembly:
    """Interpret one node's ``code_generation_ipi()`` commands."""
    asm = NodeAssembly(node)
    for command in commands:
        try:
            _apply(asm, command)
        except (ValueError, IndexError):
            raise AgqError(f"node {node}: cannot read FINN's IPI command '{command}'") from None
    if not asm.cells:
        raise AgqError(f"node {node}: FINN's IPI commands create no RTL module cell")
    return asm


def _apply(asm: NodeAssembly, command: str) -> None:
    refs = _BRACKETED.findall(command)
    words = shlex.split(_BRACKETED.sub("", command))
    verb = words[0]
    if verb == "add_files":
        asm.sources.extend(Path(w) for w in words[1:] if not w.startswith("-"))
    elif verb == "create_bd_cell" and "-reference" in words and words[2] in ("module", "hier"):
        module = words[words.index("-reference") + 1]
        path = words[-1].strip("/")
        asm.cells[path] = Cell(path, module)
    elif verb in ("create_bd_pin", "create_bd_intf_pin", "save_bd_design") or (
        verb == "create_bd_cell" and words[1:3] == ["-type", "hier"]
    ):
        pass  # a hierarchy and its boundary pins exist implicitly once cells and nets name them
    elif verb in ("connect_bd_net", "connect_bd_intf_net"):
        pins = [_pin(ref) for _, ref in refs]
        nets = asm.intf_nets if verb == "connect_bd_intf_net" else asm.nets
        nets.extend((pins[0], other) for other in pins[1:])
    elif verb == "set_property" and words[1].startswith("CONFIG.") and refs and refs[0][0] == "cells":
        asm.cells[refs[0][1].strip().strip("/")].params[words[1][len("CONFIG."):]] = words[2]
    else:
        raise AgqError(
            f"node {asm.node}: FINN's IPI command '{command}' is not supported by agq's Verilator stitch "
            "(only FINN RTL module cells can be simulated)"
        )
