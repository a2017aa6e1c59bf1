"""Small dependency-free descriptions shared by every layer (they import nothing from ``gamecraft``):

* ``geometry`` — the chunk geometry: 33 video frames per chunk at 25 fps, the VAE's ×8 / ×4 compression,
  16 latent channels, 10 or 18 latent frames per pass, the default 704×1216 size;
* ``workers`` — :class:`WorkerSpec`, how a multi-GPU worker process builds its engine.
"""
