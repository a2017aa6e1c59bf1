"""Pixels in and out: start images and videos (``image``, ``video_reader``), H.264 mp4 and PNG output
(``video``), and the top-down camera-path preview (``preview``)."""
