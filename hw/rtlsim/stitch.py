"""Stitch an all-RTL FINN dataflow partition into one SystemVerilog top for Verilator.

FINN stitches its layers with Vivado's IP integrator (``CreateStitchedIP``), which agq cannot run. This
module does the same job in plain SystemVerilog, by walking the partition graph:

* every node is assembled from FINN's own IPI description (:mod:`hw.rtlsim.ipi`): its wrapper, the
  ``memstream`` weight streamer of decoupled MVAUs, the FIFOs (``StreamingFIFO_rtl`` with the depth
  FINN's folding gave it) and width converters InsertDWC/InsertFIFO put into the graph;
* every tensor between two nodes becomes one AXI-stream (TDATA/TVALID/TREADY) wire bundle from its
  producer's ``out<i>_V`` to its consumer's ``in<j>_V``; the partition's input and output become the
  top's ``in0_V`` / ``out0_V`` ports;
* every input pin that FINN leaves unconnected (AXI-lite, set-selection streams) is tied to zero, as an
  unconnected block-design input is; clocks and resets go to the one ``ap_clk`` / ``ap_rst_n``;
* each AXI-stream gets one bit of ``stream_fire`` (TVALID & TREADY) so that the testbench's watchdog
  can name the last stream that moved;
* memory-init file parameters (weights, thresholds) are re-pointed to paths relative to the
  simulator's working directory, so one compiled simulator runs any weights of the same hardware.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agq.hw.rtlsim.hdl import ModuleHeader, read_module_headers
from agq.hw.rtlsim.ipi import NodeAssembly, read_ipi
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from agq.errors import AgqError

TOP = "agq_top"
_TOP_CELL = "$top"
_STREAM_PIN = re.compile(r"(in|out)(\d+)_V")
_HDL_SUFFIXES = (".v", ".sv")


@dataclass(frozen=True)
class StreamPort:
    """The partition's input or output stream: what the testbench must pack or unpack."""

    tensor: str
    width: int  # TDATA width in bits, padded to whole bytes
    packed_bits: int  # bits FINN packs into one word (unpadded stream width)
    datatype: str  # FINN DataType name of one element
    folded_shape: tuple[int, ...]  # FINN's folded shape for batch 1: one stream word per row
    element_bits: int  # bits of one element inside a word (the output's datatype width)


@dataclass
class StitchedDesign:
    """Everything Verilator and the testbench need; ``top_sv`` is the generated source text."""

    top_sv: str
    sources: list[Path]
    memory_files: dict[str, Path]  # path relative to the simulator's working dir -> FINN's file
    streams: list[str]  # stream_fire bit i -> a name a person can find in the graph
    input: StreamPort
    output: StreamPort
    nodes: list[str] = field(default_factory=list)


class _Nets:
    """Union-find over (cell, pin) pairs: connected pins share one wire."""

    def __init__(self) -> None:
        self.parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(self, pin: tuple[str, str]) -> tuple[str, str]:
        self.parent.setdefault(pin, pin)
        while self.parent[pin] != pin:
            self.parent[pin] = self.parent[self.parent[pin]]
            pin = self.parent[pin]
        return pin

    def union(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        self.parent[self.find(a)] = self.find(b)

    def groups(self) -> dict[tuple[str, str], list[tuple[str, str]]]:
        out: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for pin in list(self.parent):
            out.setdefault(self.find(pin), []).append(pin)
        return out


def _wire_name(text: str) -> str:
    return "w_" + re.sub(r"\W", "_", text)


def _is_producer_pin(pin: str) -> bool:
    return pin.lower().startswith(("out", "m_axis"))


class _Stitcher:
    def __init__(self, model: ModelWrapper) -> None:
        self.model = model
        self.scalar = _Nets()
        self.intf = _Nets()
        self.widths: dict[tuple[str, str], int] = {}  # intf pin -> TDATA width FINN states
        self.cells: dict[str, tuple[ModuleHeader, dict[str, str]]] = {}  # path -> (header, parameters)
        self.sources: list[Path] = []
        self.memory: dict[str, Path] = {}

    def add_node(self, node: object) -> None:
        name = node.name
        if not node.domain.startswith("finn.custom_op.fpgadataflow") or not node.op_type.endswith("_rtl"):
            raise AgqError(
                f"node {name} ({node.op_type}) is not an RTL layer: agq's Verilator stitch needs an all-RTL "
                "partition (HLS layers need Vivado)"
            )
        inst = getCustomOp(node)
        intf = inst.get_verilog_top_module_intf_names()
        if intf.get("aximm"):
            raise AgqError(f"node {name} reads weights over AXI-MM ({intf['aximm']}): not simulated by agq")
        if intf.get("clk2x"):
            raise AgqError(f"node {name} is double-pumped (needs ap_clk2x): not simulated by agq")
        code_gen = inst.get_nodeattr("code_gen_dir_ipgen")
        code_gen_dir = Path(code_gen)
        if not code_gen or not code_gen_dir.is_dir():
            raise AgqError(f"node {name}: its generated HDL folder (code_gen_dir_ipgen '{code_gen}') is "
                           "missing: run `agq build` again")
        asm = read_ipi(name, inst.code_generation_ipi())
        self._add_sources(asm)
        headers = self._headers(asm, code_gen_dir)
        own_modules = {inst.get_verilog_top_module_name(), inst.get_nodeattr("gen_top_module")}
        for path, cell in asm.cells.items():
            header = headers[cell.module]
            params = dict(cell.params)
            params.update(self._relocate_memory(name, header, code_gen_dir))
            self.cells[path] = (header, params)
            if cell.module in own_modules:
                self._note_stream_widths(inst, path, header)
        for a, b in asm.nets:
            self.scalar.union(a, b)
        for a, b in asm.intf_nets:
            self.intf.union(a, b)
        for clk in intf["clk"]:
            self.scalar.union((name, clk), (_TOP_CELL, "ap_clk"))
        for rst in intf["rst"]:
            self.scalar.union((name, rst), (_TOP_CELL, "ap_rst_n"))
        self._connect_streams(node, inst, intf)

    def _add_sources(self, asm: NodeAssembly) -> None:
        for src in asm.sources:
            if not src.is_file():
                raise AgqError(f"node {asm.node}: HDL source {src} is missing")
            if src.resolve() not in {s.resolve() for s in self.sources}:
                self.sources.append(src)

    @staticmethod
    def _headers(asm: NodeAssembly, code_gen_dir: Path) -> dict[str, ModuleHeader]:
        headers: dict[str, ModuleHeader] = {}
        for src in asm.sources:
            if src.suffix in _HDL_SUFFIXES and src.parent.resolve() == code_gen_dir.resolve():
                headers.update(read_module_headers(src))
        for cell in asm.cells.values():
            if cell.module not in headers:
                raise AgqError(
                    f"node {asm.node}: module {cell.module} is not defined in its generated HDL "
                    f"({code_gen_dir})"
                )
        return headers

    def _relocate_memory(self, node: str, header: ModuleHeader, code_gen_dir: Path) -> dict[str, str]:
        """Point file-naming string parameters (INIT_FILE, THRESHOLDS_PATH) to ``<node>/<name>``.

        A parameter names either a file (memstream's INIT_FILE) or a file-name prefix (thresholding's
        THRESHOLDS_PATH, relative to FINN's code-gen dir). Those files are copied beside the simulator.
        """
        overrides = {}
        for param, value in header.string_params.items():
            if not value:
                continue
            target = Path(value) if Path(value).is_absolute() else code_gen_dir / value
            if target.is_file():
                files = [target]
            elif target.parent.is_dir() and target.name:
                files = sorted(
                    f for f in target.parent.iterdir()
                    if f.is_file() and f.name.startswith(target.name) and f.suffix not in _HDL_SUFFIXES
                )
            else:
                files = []
            if files:
                for f in files:
                    self.memory[f"{node}/{f.name}"] = f
                overrides[param] = f'"{node}/{target.name}"'
        return overrides

    def _note_stream_widths(self, inst: object, path: str, header: ModuleHeader) -> None:
        """FINN states the padded width of each ``in<i>_V`` / ``out<i>_V`` of a node's own wrapper."""
        for port in header.ports:
            m = _STREAM_PIN.fullmatch(port.removesuffix("_TDATA"))
            if m and port.endswith("_TDATA"):
                index = int(m.group(2))
                width = (inst.get_instream_width_padded(index) if m.group(1) == "in"
                         else inst.get_outstream_width_padded(index))
                self.widths[(path, port.removesuffix("_TDATA"))] = int(width)

    def _connect_streams(self, node: object, inst: object, intf: dict) -> None:
        for kind, tensors in (("s_axis", node.input), ("m_axis", node.output)):
            for pin, width in intf[kind]:
                m = _STREAM_PIN.fullmatch(pin)
                if not m or int(m.group(2)) >= len(tensors):
                    raise AgqError(f"node {node.name}: stream interface {pin} matches no node input/output")
                tensor = tensors[int(m.group(2))]
                if kind == "s_axis" and self.model.get_initializer(tensor) is not None:
                    raise AgqError(f"node {node.name}: {pin} streams the constant {tensor} from outside")
                self.widths[(node.name, pin)] = int(width)
                self.intf.union((node.name, pin), ("$tensor", tensor))


def _stream_port(model: ModelWrapper, tensor: str, is_input: bool) -> StreamPort:
    node = model.find_consumer(tensor) if is_input else model.find_producer(tensor)
    inst = getCustomOp(node)
    index = list(node.input if is_input else node.output).index(tensor)
    if is_input:
        width, bits = inst.get_instream_width_padded(index), inst.get_instream_width(index)
        shape, dt = inst.get_folded_input_shape(index), inst.get_input_datatype(index)
    else:
        width, bits = inst.get_outstream_width_padded(index), inst.get_outstream_width(index)
        shape, dt = inst.get_folded_output_shape(index), inst.get_output_datatype(index)
    return StreamPort(tensor, int(width), int(bits), dt.get_canonical_name(), tuple(int(s) for s in shape),
                      dt.bitwidth())


def stitch(model: ModelWrapper) -> StitchedDesign:
    """The stitched top of an all-RTL partition whose HDL FINN has generated (PrepareIP)."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise AgqError(
            f"the partition has {len(graph.input)} inputs and {len(graph.output)} outputs; "
            "agq's testbench drives exactly one input stream and reads one output stream"
        )
    if not graph.node:
        raise AgqError("the partition has no nodes")
    st = _Stitcher(model)
    for node in graph.node:
        st.add_node(node)
    in_t, out_t = graph.input[0].name, graph.output[0].name
    st.intf.union((_TOP_CELL, "in0_V"), ("$tensor", in_t))
    st.intf.union((_TOP_CELL, "out0_V"), ("$tensor", out_t))
    design_in = _stream_port(model, in_t, True)
    design_out = _stream_port(model, out_t, False)
    st.widths[(_TOP_CELL, "in0_V")] = design_in.width
    st.widths[(_TOP_CELL, "out0_V")] = design_out.width
    top_sv, streams = _render(st, design_in.width, design_out.width)
    return StitchedDesign(
        top_sv=top_sv,
        sources=_packages_first(st.sources),
        memory_files=st.memory,
        streams=streams,
        input=design_in,
        output=design_out,
        nodes=[n.name for n in graph.node],
    )


def _packages_first(sources: list[Path]) -> list[Path]:
    """Verilator needs a package parsed before any module that imports it."""
    is_pkg = [bool(re.search(r"^\s*package\s+\w+", s.read_text(), re.M)) for s in sources]
    return [s for s, p in zip(sources, is_pkg, strict=True) if p] + [
        s for s, p in zip(sources, is_pkg, strict=True) if not p
    ]


def _intf_port(header: ModuleHeader, pin: str, signal: str) -> str | None:
    """FINN wrappers spell AXI-stream ports ``in0_V_TDATA`` or ``m_axis_0_tdata``."""
    wanted = f"{pin}_{signal}".lower()
    return next((p for p in header.ports if p.lower() == wanted), None)


def _render(st: _Stitcher, in_width: int, out_width: int) -> tuple[str, list[str]]:
    """The top's SystemVerilog text and the stream name of each ``stream_fire`` bit."""
    decls: list[str] = []
    fires: list[str] = []
    streams: list[str] = []
    conn: dict[tuple[str, str], str] = {}  # (cell path, port) -> expression

    order = {path: i for i, path in enumerate(st.cells)}
    top_first = {"in0_V": -1, "out0_V": len(order)}

    def graph_position(group: list[tuple[str, str]]) -> int:
        """Streams in graph order: by their producing cell (the top's input first, output last)."""
        cells = [order[c] for c, p in group if c in order and _is_producer_pin(p)]
        tops = [top_first[p] for c, p in group if c == _TOP_CELL]
        return min(cells or tops or [len(order)])

    for root, pins in sorted(st.intf.groups().items(), key=lambda kv: (graph_position(kv[1]), kv[0])):
        widths = {st.widths[p] for p in pins if p in st.widths}
        tensors = [p[1] for p in pins if p[0] == "$tensor"]
        name = tensors[0] if tensors else f"{root[0]}.{root[1]}"
        if len(widths) != 1:
            raise AgqError(f"stream {name}: FINN states TDATA widths {sorted(widths) or 'none'}; "
                           "cannot wire it")
        width = widths.pop()
        top_pin = next((p[1] for p in pins if p[0] == _TOP_CELL), None)
        base = top_pin or _wire_name(name)
        sig = {s: f"{base}_{s}" for s in ("TDATA", "TVALID", "TREADY")}
        ends = [p for p in pins if p[0] in st.cells]
        if not tensors and len(ends) < 2:
            continue  # a hierarchy pin nobody drives: tied off below like any open input
        if top_pin is None:
            decls.append(f"\twire [{width - 1}:0] {sig['TDATA']};\n\twire {sig['TVALID']}, {sig['TREADY']};")
        if len(ends) + (top_pin is not None) != 2:
            who = ", ".join(f"{c}.{p}" for c, p in ends) or "nothing"
            raise AgqError(f"stream {name} must join exactly one producer and one consumer, joins {who}")
        for cell, pin in ends:
            header = st.cells[cell][0]
            for s in ("TDATA", "TVALID", "TREADY"):
                port = _intf_port(header, pin, s)
                if port is None:
                    raise AgqError(f"cell {cell} (module {header.name}) has no port {pin}_{s}")
                conn[(cell, port)] = sig[s]
        label = " -> ".join(f"{c}.{p}" for c, p in sorted(ends, key=lambda e: not _is_producer_pin(e[1])))
        streams.append(f"{name} ({label})" if tensors else label)
        fires.append(f"{sig['TVALID']} & {sig['TREADY']}")

    for root, pins in sorted(st.scalar.groups().items()):
        top_pin = next((p[1] for p in pins if p[0] == _TOP_CELL), None)
        ends = [p for p in pins if p[0] in st.cells]
        if top_pin is None:
            wire = _wire_name(f"{root[0]}.{root[1]}")
            decls.append(f"\twire {wire};")
        for cell, port in ends:
            if port not in st.cells[cell][0].ports:
                raise AgqError(f"cell {cell} (module {st.cells[cell][0].name}) has no port {port}")
            conn[(cell, port)] = top_pin or wire

    instances = []
    for path, (header, params) in st.cells.items():
        ports = []
        for port, direction in header.ports.items():
            expr = conn.get((path, port))
            if expr is None and direction == "input":
                expr = "'0"  # left open by FINN's block design (AXI-lite, set selection): tie off
            ports.append(f"\t\t.{port}({expr or ''})")
        plist = ",\n".join(f"\t\t.{k}({v})" for k, v in params.items())
        ptext = f" #(\n{plist}\n\t)" if params else ""
        inst = path.replace("/", "__")
        instances.append(f"\t{header.name}{ptext} {inst} (\n" + ",\n".join(ports) + "\n\t);")

    fire_assign = "\tassign stream_fire = {" + ", ".join(reversed(fires)) + "};"
    text = (
        "// Generated by agq (hw/rtlsim/stitch.py) from a FINN dataflow partition: do not edit.\n"
        "`timescale 1ns/1ps\n"
        f"module {TOP} (\n"
        "\tinput ap_clk,\n\tinput ap_rst_n,\n"
        f"\tinput [{in_width - 1}:0] in0_V_TDATA,\n\tinput in0_V_TVALID,\n\toutput in0_V_TREADY,\n"
        f"\toutput [{out_width - 1}:0] out0_V_TDATA,\n\toutput out0_V_TVALID,\n\tinput out0_V_TREADY,\n"
        f"\toutput [{len(fires) - 1}:0] stream_fire\n);\n"
        + "\n".join(decls) + "\n\n" + fire_assign + "\n\n" + "\n\n".join(instances) + "\nendmodule\n"
    )
    return text, streams
