"""The generation pipeline as pure steps, CPU-testable: what a request means and how a chunk is made.

* ``actions`` — the action grammar (names, aliases, speeds) → :class:`Segment` per chunk;
* ``camera`` / ``trajectory`` — camera poses per chunk (from actions or a custom path) and their Plücker rays;
* ``presets`` — the distilled / full recipes as data;
* ``scheduler`` / ``sampling`` — the flow-matching schedule and the denoising of one chunk (stateless);
* ``session`` — one world, chunk after chunk (noise per (seed, chunk)), on any :class:`gamecraft.engine.Engine`;
* ``state`` — the world state file that continues a world in a later request.
"""
