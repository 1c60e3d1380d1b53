"""Cycle-level RTL simulation of a FINN build with Verilator (agq rtlsim)."""
