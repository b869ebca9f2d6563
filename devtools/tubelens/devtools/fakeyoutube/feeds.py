"""Channel feeds (`/feeds/videos.xml?channel_id=UC...`): Atom with YouTube's yt: and media: extensions, the 15
newest videos, written in the layout of real captured feeds.

Reproduces a real quirk: for some channels the feed-level <id> and <yt:channelId> leave out the "UC" prefix that
every entry's <yt:channelId> has (Channel.feed_id_without_uc).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from tubelens.devtools.fakeyoutube.catalogue import Catalogue, Channel, Video

FEED_ENTRIES = 15


def channel_feed(catalogue: Catalogue, channel: Channel, base_url: str, now: datetime) -> bytes:
    feed_channel_id = channel.id[2:] if channel.feed_id_without_uc else channel.id
    channel_url = f"https://www.youtube.com/channel/{channel.id}"
    head = f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns:yt="http://www.youtube.com/xml/schemas/2015" xmlns:media="http://search.yahoo.com/mrss/" \
xmlns="http://www.w3.org/2005/Atom">
 <link rel="self" href={quoteattr(f"{base_url}/feeds/videos.xml?channel_id={channel.id}")}/>
 <id>yt:channel:{feed_channel_id}</id>
 <yt:channelId>{feed_channel_id}</yt:channelId>
 <title>{escape(channel.title)}</title>
 <link rel="alternate" href="{channel_url}"/>
 <author>
  <name>{escape(channel.title)}</name>
  <uri>{channel_url}</uri>
 </author>
 <published>{_atom_time(channel.published_at)}</published>
"""
    videos = catalogue.uploads(channel.id, now)[:FEED_ENTRIES]
    entries = "".join(_entry(catalogue, channel, video, base_url, now) for video in videos)
    return (head + entries + "</feed>\n").encode()


def _entry(catalogue: Catalogue, channel: Channel, video: Video, base_url: str, now: datetime) -> str:
    channel_url = f"https://www.youtube.com/channel/{channel.id}"
    # YouTube bumps <updated> as a video's metadata and counters settle, for a day or two after upload.
    updated = min(now, video.published_at + timedelta(seconds=video.tau_s / 2))
    return f""" <entry>
  <id>yt:video:{video.id}</id>
  <yt:videoId>{video.id}</yt:videoId>
  <yt:channelId>{channel.id}</yt:channelId>
  <title>{escape(video.title)}</title>
  <link rel="alternate" href="https://www.youtube.com/watch?v={video.id}"/>
  <author>
   <name>{escape(channel.title)}</name>
   <uri>{channel_url}</uri>
  </author>
  <published>{_atom_time(video.published_at)}</published>
  <updated>{_atom_time(updated)}</updated>
  <media:group>
   <media:title>{escape(video.title)}</media:title>
   <media:content url="https://www.youtube.com/v/{video.id}?version=3" type="application/x-shockwave-flash" \
width="640" height="390"/>
   <media:thumbnail url="{base_url}/vi/{video.id}/hqdefault.jpg" width="480" height="360"/>
   <media:description>{escape(video.description)}</media:description>
   <media:community>
    <media:starRating count="{catalogue.likes_at(video, now)}" average="5.00" min="1" max="5"/>
    <media:statistics views="{catalogue.views_at(video, now)}"/>
   </media:community>
  </media:group>
 </entry>
"""


def _atom_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
