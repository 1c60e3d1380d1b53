"""agq: train fully fixed-point plain CNNs with AG + SSP, export to QONNX, compile with FINN."""

__version__ = "0.1.0"
