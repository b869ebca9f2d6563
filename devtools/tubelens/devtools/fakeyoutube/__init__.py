"""A local YouTube stand-in: the Data API v3, channel feeds, thumbnails and media of a seeded, generated catalogue.

    catalogue = Catalogue.generate(seed=7, now=datetime.now(UTC))
    with FakeYouTube(catalogue) as youtube:
        youtube.api_base        # http://127.0.0.1:PORT/youtube/v3
        youtube.advance(3600)   # an hour later: new uploads, more views

`tubelens fake-youtube` serves one from the command line.
"""

from tubelens.devtools.fakeyoutube.catalogue import BadInput, Catalogue, Channel, InputFaults, Video, VisualFeatures
from tubelens.devtools.fakeyoutube.media import MEDIA_URL_TEMPLATE
from tubelens.devtools.fakeyoutube.server import FakeYouTube, ServerFaults

__all__ = [
    "MEDIA_URL_TEMPLATE",
    "BadInput",
    "Catalogue",
    "Channel",
    "FakeYouTube",
    "InputFaults",
    "ServerFaults",
    "Video",
    "VisualFeatures",
]
