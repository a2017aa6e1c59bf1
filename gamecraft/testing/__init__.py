"""Synthetic weights for tests, smoke runs and benchmarks (never the model's output):

* ``tiny_weights`` — a complete tiny random weights directory in the official layout and file formats, so the
  real loaders are exercised (also the CPU fallback of ``make run``);
* ``random_weights`` — full-size (or tiny) random models built directly on the device, for GPU benchmarks
  (``GAMECRAFT_WEIGHTS=random``).
"""
