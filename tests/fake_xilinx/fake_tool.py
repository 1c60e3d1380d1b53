"""Stand-in for `vivado` and `vitis_hls` in tests: records each call and checks what FINN's Tcl reads.

Installed by tests/fake_vivado.py as small wrapper scripts on PATH. For every call it appends one JSON
line to $AGQ_FAKE_XILINX_LOG (tool, arguments, working folder, the FINN/Xilinx environment) and reads
the Tcl script the call names, the way Vivado would read it, line by line:

* ``$::env(NAME)`` must be set (an unset FINN_RTLLIB is an error, as it is in Vivado);
* every file or folder the script reads must exist: ``add_files``/``read_*``/``source`` operands,
  ``ip_repo_paths`` entries, ``-I`` include folders, every path under FINN_RTLLIB, FINN_CUSTOM_HLS or
  FINN_DEPS, and every ``#include "..."`` of an HLS source (in its folder or an ``-I`` folder);
* the outputs that FINN's Python reads after the call are written as marked stand-ins (text that says
  it is not a Xilinx product): the project file, the block design wrapper, the packaged IP's
  component.xml, netlists written with ``write_verilog -file``, the stitched project's source list
  (the files the script added, which is what Vivado lists), the HLS IP folder, and for FINN's Zynq
  project the bitfile, hwh, timing report and a utilisation report table without rows.

It cannot prove that Vivado accepts the Tcl, that synthesis, placement or timing succeed, that a
bitstream works, or any resource or timing number; paths that Tcl computes at run time (``[get_files]``,
loops, ``file join``) are not checked. A missing input makes it exit 1 naming every missing path.
"""

import json
import os
import re
import sys
from glob import glob
from pathlib import Path

STANDIN = "agq fake-Vivado stand-in: written by tests/fake_xilinx, not by a Xilinx tool\n"
READS = {"add_files", "read_verilog", "read_vhdl", "read_xdc", "source", "import_files"}
# options of the reading commands that take a value (the value is not a file)
VALUED = {"-fileset", "-of_objects", "-cflags", "-csimflags", "-library", "-tb"}
ENV_ROOTS = ("FINN_RTLLIB", "FINN_CUSTOM_HLS", "FINN_DEPS")
WATCHED = (*ENV_ROOTS, "FINN_BUILD_DIR", "XILINX_LOCAL_USER_DATA", "LD_LIBRARY_PATH", "XILINX_VIVADO",
           "XILINX_HLS", "PLATFORM_REPO_PATHS")
ZYNQ_PRODUCTS = {  # FINN's Zynq project (make_zynq_proj.py): what its Python reads after Vivado
    "finn_zynq_link.runs/impl_1/top_wrapper.bit": STANDIN,
    "finn_zynq_link.gen/sources_1/bd/top/hw_handoff/top.hwh": STANDIN,
    "finn_zynq_link.runs/impl_1/top_wrapper_timing_summary_routed.rpt": STANDIN,
    "synth_report.xml": '<?xml version="1.0"?>\n<!-- ' + STANDIN.strip() + ' -->\n<RptDoc><table><tablerow>'
                        '<tableheader contents="Instance"/><tableheader contents="Total LUTs"/></tablerow>'
                        '</table></RptDoc>\n',
}


def words(line: str) -> list[str]:
    """Tcl words of one command: quotes, braces and brackets keep their content together."""
    out, word, depth, quote = [], "", 0, False
    for ch in line:
        if ch == '"' and depth == 0:
            quote = not quote
            continue
        if ch in "{[" and not quote:
            depth += 1
        elif ch in "}]" and not quote:
            depth -= 1
        if ch.isspace() and depth == 0 and not quote:
            if word:
                out.append(word)
            word = ""
        else:
            word += ch
    return [*out, word] if word else out


class Reader:
    """Reads one Tcl script as Vivado would, checking its inputs and writing the stand-in outputs."""

    def __init__(self, cwd: Path) -> None:
        self.cwd, self.vars, self.added, self.missing, self.checked = cwd, {}, [], [], 0
        self.includes: list[str] = []
        self.project: Path | None = None
        self.zynq = False

    def subst(self, line: str) -> str:
        def env(match: re.Match) -> str:
            if match.group(1) not in os.environ:
                self.missing.append(f"environment variable {match.group(1)}")
                return "$UNSET"
            return os.environ[match.group(1)]

        line = re.sub(r"\$::env\((\w+)\)", env, line)
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.vars.get(m.group(1), m.group(0)), line)

    def need(self, token: str, folder: bool = False) -> None:
        token = token.strip('"{}')
        if not token or "$" in token or "[" in token:
            return  # computed by Tcl at run time: not checked
        path = token if token.startswith("/") else str(self.cwd / token)
        self.checked += 1
        found = glob(path) if "*" in path else ([path] if os.path.exists(path) else [])
        if not found or (folder and not all(os.path.isdir(p) for p in found)):
            self.missing.append(path)

    def line(self, line: str) -> None:
        w = words(line)
        cmd, args = w[0], w[1:]
        for token in re.findall(r"-I(\S+)", line):
            self.need(token.strip('"'), folder=True)
            self.includes.append(token.strip('"'))
        roots = [os.environ[r] for r in ENV_ROOTS if os.environ.get(r)]
        for token in re.findall(r"(/[^\s\"'{}\[\]]+)", line):
            if any(token.startswith(root) for root in roots):
                self.need(token)
        if cmd == "set" and len(args) == 2 and "[" not in args[1]:
            self.vars[args[0]] = args[1].strip('"{}')
        elif cmd in READS:
            skip = False
            for arg in args:
                if skip or arg.startswith("-"):
                    skip = arg in VALUED
                    continue
                self.need(arg)
                self.added.append(arg.strip('"{}'))
        elif cmd == "set_property" and args[:1] == ["ip_repo_paths"]:
            for listed in re.findall(r"\[list ([^\]]*)\]", args[1]):
                for token in words(listed):
                    self.need(token, folder=True)
        elif cmd == "create_project":
            self.project = self.cwd / args[1] if not args[1].startswith("-") else self.cwd
            self.write(self.project / f"{args[0]}.xpr", STANDIN)
            if args[0] == "finn_zynq_link":
                self.zynq = True
        elif cmd == "make_wrapper":
            bd = Path(re.search(r"get_files (\S+\.bd)", line).group(1))
            self.write(bd.parent / "hdl" / f"{bd.stem}_wrapper.v", STANDIN)
        elif cmd == "write_verilog" and "-file" in args:  # e.g. the functional-simulation netlist
            self.write(Path(args[args.index("-file") + 1]), STANDIN)
        elif cmd == "ipx::package_project":
            self.write(Path(args[args.index("-root_dir") + 1]) / "component.xml", STANDIN)
        elif cmd == "open_project" and not args[0].endswith(".xpr"):
            self.project = self.cwd / args[0]  # Vitis HLS project
        elif cmd == "export_design" and self.project is not None:
            (self.project / "sol1" / "impl" / "ip").mkdir(parents=True, exist_ok=True)
        listing = re.search(r"\[open (\S+all_verilog_srcs\.txt) w\]", line)
        if listing:
            self.write(Path(listing.group(1)), "".join(f"{f}\n" for f in self.added))

    def write(self, path: Path, text: str) -> None:
        path = path if path.is_absolute() else self.cwd / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def read(self, script: Path) -> None:
        text = script.read_text().replace("\\\n", " ")
        for raw in text.splitlines():
            stripped = raw.strip()
            if stripped and not stripped.startswith("#"):
                self.line(self.subst(stripped))
        for source in [a for a in self.added if a.endswith(".cpp")]:
            self.check_includes(Path(source))
        if self.zynq and not self.missing:  # Vivado stops at a missing input: no products
            for rel, text in ZYNQ_PRODUCTS.items():
                self.write(self.cwd / rel, text)

    def check_includes(self, source: Path) -> None:
        if not source.is_file():
            return
        for name in re.findall(r'#include\s+"([^"]+)"', source.read_text()):
            self.checked += 1
            if not any((Path(d) / name).is_file() for d in [str(source.parent), *self.includes]):
                self.missing.append(f"{name} (included by {source})")


def script_of(tool: str, argv: list[str]) -> str | None:
    if tool == "vivado" and "-source" in argv:
        return argv[argv.index("-source") + 1]
    if tool == "vitis_hls" and argv:
        return argv[0]
    return None


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    cwd = Path.cwd()
    reader = Reader(cwd)
    script = script_of(tool, argv)
    if script is not None:
        reader.read(Path(script) if Path(script).is_absolute() else cwd / script)
    record = {"tool": tool, "argv": argv, "cwd": str(cwd), "script": script, "checked": reader.checked,
              "missing": reader.missing, "env": {k: os.environ.get(k) for k in WATCHED}}
    with open(os.environ["AGQ_FAKE_XILINX_LOG"], "a") as log:
        log.write(json.dumps(record) + "\n")
    if reader.missing:
        print(f"fake-{tool}: missing: {'; '.join(reader.missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
