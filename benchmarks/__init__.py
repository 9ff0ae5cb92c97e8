"""Benchmarks: solver overhead, memory per gradient mode, fairseq training and decoding throughput.

Run each as ``python -m benchmarks.<name>`` from the repository root; ``--quick`` is a CPU smoke
run. Every timing is a ratio against a baseline measured in the same process, interleaved with it,
and summarised by the median over repeats, because absolute times on a shared machine say little.
"""
