"""Video for m2f_edge: sources and sinks opened by URI, the pipelined stream, multi-camera batching.

    from m2f_edge.video import open_source, open_sink, multi
"""

from .sinks import Sink, SinkError, open_sink
from .sources import Frame, Source, SourceError, gstreamer_available, open_source
from .stream import Stream, StreamError, StreamResult, multi, stream

__all__ = ["open_source", "open_sink", "multi", "stream", "Source", "Sink", "Frame", "Stream", "StreamResult",
           "SourceError", "SinkError", "StreamError", "gstreamer_available"]
