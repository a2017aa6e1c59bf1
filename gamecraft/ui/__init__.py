"""The game-controller web page: ``python -m gamecraft.ui --backend http://127.0.0.1:5000 --port 8080``."""

from gamecraft.ui.replicate import ReplicateBackend
from gamecraft.ui.server import CogBackend, make_server

__all__ = ["CogBackend", "ReplicateBackend", "make_server"]
