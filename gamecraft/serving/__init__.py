"""Serving a request: the configuration (:mod:`.config`), building the engine for it (:mod:`.build`), the time
budget (:mod:`.budget`), and :func:`.generate.generate`, which runs one request and yields typed events."""
