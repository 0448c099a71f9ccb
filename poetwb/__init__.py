"""poetwb: a terminal poetry workbench. Fine-tune a small language model into a poet and see the difference."""

__version__ = "0.1.0"
