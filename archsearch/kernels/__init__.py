"""The fast ops under the blocks, one folder each.

Each folder holds `reference.py` (plain PyTorch that defines what the op computes), the fast forms beside it
(Triton or fused), and an `__init__.py` whose public function dispatches: the fast form on CUDA when it is
available, the reference elsewhere. Blocks call only those public functions, so a faster kernel replaces a
reference without touching a block.
"""
