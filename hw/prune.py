"""Which of FINN's generated folders a build still uses, and deleting only the others.

FINN writes every layer's code, every stitched-IP and Vivado project into FINN_BUILD_DIR
(``finn_tmp/``) under fresh random names, so a changed build leaves the old folders behind. A folder
is still in use when anything a later step or a re-run can read points into it:

* a node attribute of any saved model (``code_gen_dir_ipgen``, ``ipgen_path``, ``ip_path``, ...), in
  the top-level models *and* in the partitions they reference (a StreamingDataflowPartition's
  ``model``: the kernel partitions of the Zynq/Alveo shell hold the FIFOs, width converters and
  IODMAs, which no top-level node names);
* a metadata property of those models (``vivado_stitch_proj``, ``vivado_pynq_proj``, ``wrapper_filename``...);
* a source file listed by a stitched-IP project (``all_verilog_srcs.txt``): the Vivado project
  reads those files in place.

Only top-level folders of ``finn_tmp/`` that nothing of that points into are deleted.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

# the file in which FINN's CreateStitchedIP lists every HDL source its Vivado project reads
STITCHED_SOURCES = "all_verilog_srcs.txt"
SDP = "StreamingDataflowPartition"


def _under(path: str, root: Path) -> Path | None:
    """``path`` as an absolute path if it lies inside ``root`` (None otherwise)."""
    if not path.startswith("/"):
        return None
    candidate = Path(path)
    return candidate if candidate.is_relative_to(root) else None


def _model_strings(model: object) -> Iterable[str]:
    """Every string attribute value and metadata value of a qonnx ModelWrapper (qonnx keeps its metadata
    on the graph; the model's own field is read too)."""
    for prop in [*model.model.metadata_props, *model.graph.metadata_props]:
        yield prop.value
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.s:
                yield attr.s.decode(errors="replace")
            yield from (s.decode(errors="replace") for s in attr.strings)


def referenced_paths(model_files: Iterable[Path], root: Path) -> set[Path]:
    """Paths inside ``root`` that the given models (and every partition model they reference,
    recursively, and every stitched-IP project's source list) point at."""
    from qonnx.core.modelwrapper import ModelWrapper

    found: set[Path] = set()
    pending = [Path(f) for f in model_files]
    seen: set[Path] = set()
    while pending:
        file = pending.pop()
        if file in seen or not file.is_file():
            continue
        seen.add(file)
        model = ModelWrapper(str(file))
        for value in _model_strings(model):
            path = _under(value, root)
            if path is None:
                if value.endswith(".onnx") and value.startswith("/"):
                    pending.append(Path(value))  # a partition model kept outside finn_tmp
                continue
            found.add(path)
            if value.endswith(".onnx"):
                pending.append(path)
            listing = path / STITCHED_SOURCES
            if listing.is_file():
                found.update(p for line in listing.read_text().split() if (p := _under(line, root)))
    return found


def prune_generated_code(finn_tmp: Path, keep: set[Path]) -> list[Path]:
    """Delete the top-level folders of ``finn_tmp`` that no path in ``keep`` lies in; returns them."""
    root = finn_tmp.resolve()
    used = {root / p.relative_to(root).parts[0] for p in keep if p.is_relative_to(root) and p != root}
    stale = [d for d in sorted(root.iterdir()) if d.is_dir() and d not in used]
    for folder in stale:
        shutil.rmtree(folder)
    return stale
