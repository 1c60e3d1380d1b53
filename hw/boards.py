"""Target boards, read from FINN's own board tables so that agq never keeps a second list.

A board is whatever FINN knows by name (``finn.util.basic.part_map``: the PYNQ boards, Alveo cards and
Versal kits). Its resource totals come from FINN's platform models (``finn.util.platforms``) where FINN
has one; for the few boards FINN lists without a platform model the share of the board cannot be
computed and the budget check says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from agq.errors import AgqError

DEFAULT_BOARD = "Pynq-Z2"
# The resource kinds of FINN's platform models, in their order (finn.util.platforms.Platform).
RESOURCE_KINDS = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")


@dataclass(frozen=True)
class Board:
    """One FINN board: name, FPGA part, shell flow and (when FINN models it) its resources."""

    name: str
    part: str
    shell: str  # FINN's shell flow: "vivado_zynq" (PYNQ boards), "vitis_alveo" or "" (none)
    resources: dict[str, int] | None

    def to_dict(self) -> dict:
        return {"name": self.name, "part": self.part, "shell": self.shell, "resources": self.resources}


def known_boards() -> list[str]:
    """Every board name FINN accepts, in FINN's order."""
    from finn.util.basic import part_map

    return list(part_map)


def resolve_board(name: str) -> Board:
    """The FINN board called ``name``; an unknown name raises AgqError listing the known ones."""
    from finn.util.basic import alveo_part_map, part_map, pynq_part_map
    from finn.util.platforms import platforms

    if name not in part_map:
        raise AgqError(f"unknown board {name!r}; FINN knows: {', '.join(known_boards())}")
    if name in pynq_part_map:
        shell = "vivado_zynq"
    elif name in alveo_part_map:
        shell = "vitis_alveo"
    else:
        # Versal kits (VEK280, VCK190, V80): FINN knows their part but has no shell for them (ZynqBuild
        # takes PYNQ boards only, VitisBuild needs an Alveo platform), so the build ends with the IP.
        shell = ""
    resources = None
    if name in platforms:
        per_slr = platforms[name]().compute_resources
        resources = {kind: int(sum(slr[i] for slr in per_slr)) for i, kind in enumerate(RESOURCE_KINDS)}
    return Board(name=name, part=part_map[name], shell=shell, resources=resources)
