"""Inference engine: the RCAN on ONNX Runtime (providers, fp16, I/O binding, tiling, OOD check).

Importing this package imports no onnxruntime; `mlsim_live.engine.rcan.RCANReconstructor` does
when it is constructed.
"""
