"""test_parity_bf16.py — the bf16_* cases of test_parity.py: moe with
precision "bf16" against the PyTorch reference rounding the same products'
inputs, within TOL_BF16 (derived there). Exits 77 (SKIP) on a CPU without
bf16 dot products, where moe runs fp32 instead (tests/skips-allowed).
Usage: test_parity_bf16.py [--measure] BUILD_DIR [CASE ...]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_parity  # noqa: E402

if __name__ == "__main__":
    test_parity.main([n for n in test_parity.CASES if n.startswith("bf16_")])
