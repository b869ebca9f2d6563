"""YouTube Data API v3 resources and errors, field by field after real captured responses.

Where the references and today's API differ, today's API wins: timestamps without milliseconds, no dislikeCount,
subscriberCount rounded down to three significant figures. search.list HTML-escapes titles (`&#39;`) and flattens
descriptions into one truncated line, as the real one does. Page tokens are the real
encoding (a protobuf varint of the offset, base64url: CAUQAA is offset 5), so they look and page like YouTube's.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from tubelens.devtools.fakeyoutube.catalogue import Catalogue, Channel, Video, iso_duration, rfc3339
from tubelens.devtools.fakeyoutube.thumbnails import available_thumbnails
from tubelens.labels import VIDEO_CATEGORIES

# Units per call, as documented at developers.google.com/youtube/v3/determine_quota_cost.
QUOTA_COSTS = {
    "videos.list": 1,
    "channels.list": 1,
    "playlistItems.list": 1,
    "videoCategories.list": 1,
    "search.list": 100,
}
MAX_IDS = 50
MAX_RESULTS = 50
DEFAULT_RESULTS = 5
AVATAR_SIZES = (("default", 88), ("medium", 240), ("high", 800))
SEARCH_THUMBNAILS = ("default", "medium", "high")
SEARCH_DESCRIPTION_CHARS = 160
_ADDRESS = re.compile(r"https?://[^/\"]+")
YOUTUBE_CHANNEL = "UCBR8-60-B28hp2BmDPdntcQ"  # the channel that owns the video categories


class ApiError(Exception):
    """An answer in Google's JSON error envelope: how the stand-in says no, never a failure of its own."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str,
        domain: str = "global",
        *,
        location: str | None = None,
        location_type: str = "parameter",
        status: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.reason, self.domain = code, message, reason, domain
        self.location, self.location_type, self.status = location, location_type, status

    def body(self) -> dict:
        detail: dict = {"message": self.message, "domain": self.domain, "reason": self.reason}
        if self.location is not None:
            detail |= {"location": self.location, "locationType": self.location_type}
        error: dict = {"code": self.code, "message": self.message, "errors": [detail]}
        if self.status:
            error["status"] = self.status
        return {"error": error}


def missing_key() -> ApiError:
    return ApiError(403, "The request is missing a valid API key.", "forbidden", status="PERMISSION_DENIED")


def invalid_key() -> ApiError:
    return ApiError(400, "API key not valid. Please pass a valid API key.", "badRequest", status="INVALID_ARGUMENT")


def quota_exceeded() -> ApiError:
    message = (
        'The request cannot be completed because you have exceeded your <a href="/youtube/v3/getting-started#quota">'
        "quota</a>."
    )
    return ApiError(403, message, "quotaExceeded", "youtube.quota")


def rate_limited() -> ApiError:
    return ApiError(
        429, "Resource has been exhausted (e.g. check quota).", "rateLimitExceeded", status="RESOURCE_EXHAUSTED"
    )


def backend_error(code: int) -> ApiError:
    if code == 503:
        return ApiError(503, "The service is currently unavailable.", "backendError", status="UNAVAILABLE")
    return ApiError(500, "Backend Error", "backendError")


def method_not_found() -> ApiError:
    return ApiError(404, "Method not found.", "notFound", status="NOT_FOUND")


def _required(parameter: str) -> ApiError:
    return ApiError(400, f"Required parameter: {parameter}", "required", location=parameter)


def _no_filter(expected: str) -> ApiError:
    return ApiError(
        400,
        f"No filter selected. Expected one of: {expected}",
        "missingRequiredParameter",
        "youtube.parameter",
        location="",
    )


def _invalid_filters() -> ApiError:
    return ApiError(
        400,
        "The request specifies an invalid filter parameter.",
        "invalidFilters",
        "youtube.parameter",
        location="parameters.",
        location_type="other",
    )


def _invalid_value(parameter: str, message: str) -> ApiError:
    return ApiError(400, message, "invalidParameter", "youtube.parameter", location=parameter)


@dataclass
class Query:
    """One request's parameters, first value of each."""

    params: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    def parts(self, allowed: Sequence[str]) -> set[str]:
        raw = self.params.get("part")
        if not raw:
            raise _required("part")
        parts = {p.strip() for p in raw.split(",") if p.strip()}
        for part in sorted(parts):
            if part != "id" and part not in allowed:
                raise ApiError(400, part, "unknownPart", "youtube.part", location="part")
        return parts

    def ids(self, name: str = "id") -> list[str] | None:
        raw = self.params.get(name)
        if raw is None:
            return None
        ids = [i.strip() for i in raw.split(",") if i.strip()]
        if len(ids) > MAX_IDS:
            raise _invalid_filters()
        return ids

    def max_results(self) -> int:
        raw = self.params.get("maxResults", str(DEFAULT_RESULTS))
        if not raw.isdigit() or int(raw) > MAX_RESULTS:
            raise _invalid_value("maxResults", f"Invalid value '{raw}'. Values must be within the range: [0, 50]")
        return int(raw)

    def offset(self) -> int:
        token = self.params.get("pageToken")
        return 0 if not token else decode_page_token(token)

    def time(self, name: str) -> datetime | None:
        raw = self.params.get(name)
        if raw is None:
            return None
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise _invalid_value(name, f"Invalid value '{raw}'. Expected an RFC 3339 date-time.")
        return when


# paging


def page_token(offset: int, backwards: bool = False) -> str:
    raw = b"\x08" + _varint(offset) + b"\x10" + (b"\x01" if backwards else b"\x00")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if raw[:1] != b"\x08":
            raise ValueError(token)
        offset, shift, index = 0, 0, 1
        while raw[index] & 0x80:
            offset |= (raw[index] & 0x7F) << shift
            shift, index = shift + 7, index + 1
        offset |= raw[index] << shift
        if raw[index + 1 : index + 2] != b"\x10":
            raise ValueError(token)
        return offset
    except (ValueError, IndexError):
        raise _invalid_page_token() from None


def _invalid_page_token() -> ApiError:
    return ApiError(
        400,
        "The request specifies an invalid page token.",
        "invalidPageToken",
        "youtube.parameter",
        location="pageToken",
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def list_response(
    kind: str, items: list[dict], *, total: int, per_page: int, offset: int = 0, region: str | None = None
) -> dict:
    """A list response in the references' key order, with page tokens when there is more on either side."""
    response: dict = {"kind": kind, "etag": ""}
    if offset + per_page < total and per_page > 0:
        response["nextPageToken"] = page_token(offset + per_page)
    if offset > 0:
        response["prevPageToken"] = page_token(max(0, offset - per_page), backwards=True)
    if region:
        response["regionCode"] = region
    response["pageInfo"] = {"totalResults": total, "resultsPerPage": per_page}
    response["items"] = items
    return _with_etag(response)


def _with_etag(resource: dict) -> dict:
    """Fills the `etag` slot from the content: a new etag whenever anything in it changes, but not the server's
    address, so one catalogue has the same etags on whatever port it is served."""
    content = _ADDRESS.sub("", json.dumps(resource, sort_keys=True))
    digest = hashlib.sha1(content.encode()).digest()
    resource["etag"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return resource


# resources


@dataclass(frozen=True)
class Context:
    """What every resource is built from: the world, where this server is, and what time it is there."""

    catalogue: Catalogue
    base_url: str
    now: datetime


def _thumbnails(ctx: Context, video: Video, only: Sequence[str] | None = None) -> dict:
    return {
        size.name: {"url": f"{ctx.base_url}/vi/{video.id}/{size.file}", "width": size.width, "height": size.height}
        for size in available_thumbnails(video)
        if only is None or size.name in only
    }


def video_resource(ctx: Context, video: Video, parts: set[str]) -> dict:
    channel = ctx.catalogue.channel(video.channel_id)
    assert channel is not None
    item: dict = {"kind": "youtube#video", "etag": "", "id": video.id}
    if "snippet" in parts:
        snippet = {
            "publishedAt": rfc3339(video.published_at),
            "channelId": channel.id,
            "title": video.title,
            "description": video.description,
            "thumbnails": _thumbnails(ctx, video),
            "channelTitle": channel.title,
        }
        if video.tags:
            snippet["tags"] = list(video.tags)
        snippet |= {
            "categoryId": video.category_id,
            "liveBroadcastContent": "none",
            "defaultLanguage": "en",
            "localized": {"title": video.title, "description": video.description},
            "defaultAudioLanguage": "en",
        }
        item["snippet"] = snippet
    if "contentDetails" in parts:
        item["contentDetails"] = {
            "duration": iso_duration(video.duration_s),
            "dimension": "2d",
            "definition": video.definition,
            "caption": "true" if video.caption else "false",
            "licensedContent": video.licensed,
            "projection": "rectangular",
        }
    if "status" in parts:
        item["status"] = {
            "uploadStatus": "processed",
            "privacyStatus": "public",
            "license": "youtube",
            "embeddable": True,
            "publicStatsViewable": True,
        }
    if "statistics" in parts:
        catalogue = ctx.catalogue
        item["statistics"] = {
            "viewCount": str(catalogue.views_at(video, ctx.now)),
            "likeCount": str(catalogue.likes_at(video, ctx.now)),
            "favoriteCount": "0",
            "commentCount": str(catalogue.comments_at(video, ctx.now)),
        }
    return _with_etag(item)


def channel_resource(ctx: Context, channel: Channel, parts: set[str]) -> dict:
    item: dict = {"kind": "youtube#channel", "etag": "", "id": channel.id}
    if "snippet" in parts:
        item["snippet"] = {
            "title": channel.title,
            "description": channel.description,
            "customUrl": channel.handle,
            "publishedAt": rfc3339(channel.published_at),
            "thumbnails": {
                name: {"url": f"{ctx.base_url}/avatar/{channel.id}/s{side}.jpg", "width": side, "height": side}
                for name, side in AVATAR_SIZES
            },
            "localized": {"title": channel.title, "description": channel.description},
            "country": "US",
        }
    if "contentDetails" in parts:
        item["contentDetails"] = {"relatedPlaylists": {"likes": "", "uploads": channel.uploads_playlist_id}}
    if "statistics" in parts:
        uploads = ctx.catalogue.uploads(channel.id, ctx.now)
        item["statistics"] = {
            "viewCount": str(sum(ctx.catalogue.views_at(v, ctx.now) for v in uploads)),
            "subscriberCount": str(_three_significant_figures(channel.subscribers)),
            "hiddenSubscriberCount": False,
            "videoCount": str(len(uploads)),
        }
    return _with_etag(item)


def _three_significant_figures(count: int) -> int:
    """The API has reported subscriber counts rounded down to three significant figures since 2019."""
    unit = 10 ** max(0, len(str(count)) - 3)
    return count - count % unit


def playlist_item_resource(ctx: Context, channel: Channel, video: Video, position: int, parts: set[str]) -> dict:
    playlist_id = channel.uploads_playlist_id
    item_id = base64.b64encode(f"{playlist_id}.{video.id}".encode()).decode()
    item: dict = {"kind": "youtube#playlistItem", "etag": "", "id": item_id}
    if "snippet" in parts:
        item["snippet"] = {
            "publishedAt": rfc3339(video.published_at),
            "channelId": channel.id,
            "title": video.title,
            "description": video.description,
            "thumbnails": _thumbnails(ctx, video),
            "channelTitle": channel.title,
            "playlistId": playlist_id,
            "position": position,
            "resourceId": {"kind": "youtube#video", "videoId": video.id},
        }
    if "contentDetails" in parts:
        item["contentDetails"] = {"videoId": video.id, "videoPublishedAt": rfc3339(video.published_at)}
    if "status" in parts:
        item["status"] = {"privacyStatus": "public"}
    return _with_etag(item)


def search_result(ctx: Context, video: Video) -> dict:
    channel = ctx.catalogue.channel(video.channel_id)
    assert channel is not None
    flat = " ".join(video.description.split())
    if len(flat) > SEARCH_DESCRIPTION_CHARS:
        flat = flat[:SEARCH_DESCRIPTION_CHARS].rsplit(" ", 1)[0] + " ..."
    return _with_etag(
        {
            "kind": "youtube#searchResult",
            "etag": "",
            "id": {"kind": "youtube#video", "videoId": video.id},
            "snippet": {
                "publishedAt": rfc3339(video.published_at),
                "channelId": channel.id,
                "title": _escaped_like_search(video.title),
                "description": flat,
                "thumbnails": _thumbnails(ctx, video, SEARCH_THUMBNAILS),
                "channelTitle": channel.title,
                "liveBroadcastContent": "none",
            },
        }
    )


def _escaped_like_search(title: str) -> str:
    """search.list, alone among the methods, HTML-escapes titles (not descriptions or channel titles): You Won&#39;t."""
    return html.escape(title).replace("&#x27;", "&#39;")


# methods: (context, query) -> response body


def videos_list(ctx: Context, query: Query) -> dict:
    parts = query.parts(("snippet", "contentDetails", "statistics", "status"))
    ids = query.ids()
    if ids is None:
        raise _no_filter("myRated, idParam, id, chart")
    videos = [v for v in map(ctx.catalogue.video, ids) if v is not None and v.published_at <= ctx.now]
    items = [video_resource(ctx, v, parts) for v in videos]
    return list_response("youtube#videoListResponse", items, total=len(items), per_page=len(items))


def channels_list(ctx: Context, query: Query) -> dict:
    parts = query.parts(("snippet", "contentDetails", "statistics"))
    ids, handle = query.ids(), query.get("forHandle")
    if ids is not None:
        channels = [c for c in map(ctx.catalogue.channel, ids) if c is not None]
    elif handle is not None:
        channels = [c for c in [ctx.catalogue.channel_by_handle(handle)] if c is not None]
    else:
        raise _no_filter("id, forHandle")
    items = [channel_resource(ctx, c, parts) for c in channels]
    return list_response("youtube#channelListResponse", items, total=len(items), per_page=query.max_results())


def playlist_items_list(ctx: Context, query: Query) -> dict:
    parts = query.parts(("snippet", "contentDetails", "status"))
    per_page, offset = query.max_results(), query.offset()
    playlist_id = query.get("playlistId")
    if playlist_id is None:
        raise _no_filter("id, playlistId")
    channel = ctx.catalogue.channel_by_playlist(playlist_id)
    if channel is None:
        raise ApiError(
            404,
            "The playlist identified with the request's <code>playlistId</code> parameter cannot be found.",
            "playlistNotFound",
            "youtube.playlistItem",
            location="playlistId",
        )
    uploads = ctx.catalogue.uploads(channel.id, ctx.now)
    page = uploads[offset : offset + per_page]
    items = [playlist_item_resource(ctx, channel, v, offset + i, parts) for i, v in enumerate(page)]
    return list_response(
        "youtube#playlistItemListResponse", items, total=len(uploads), per_page=per_page, offset=offset
    )


def search_list(ctx: Context, query: Query) -> dict:
    query.parts(("snippet",))
    per_page, offset = query.max_results(), query.offset()
    order = query.get("order") or "relevance"
    if order not in _ORDERS:
        raise _invalid_value("order", f"Invalid value '{order}'. Expected one of: {', '.join(_ORDERS)}")
    terms = _words(query.get("q") or "")
    found = _search(ctx, query, terms)
    found.sort(key=_ORDERS[order](ctx, terms))
    items = [search_result(ctx, v) for v in found[offset : offset + per_page]]
    region = query.get("regionCode") or "US"
    return list_response(
        "youtube#searchListResponse", items, total=len(found), per_page=per_page, offset=offset, region=region
    )


def _search(ctx: Context, query: Query, terms: set[str]) -> list[Video]:
    types = query.get("type")
    if types is not None and "video" not in types.split(","):
        return []
    channel_id = query.get("channelId")
    after, before = query.time("publishedAfter"), query.time("publishedBefore")
    return [
        video
        for video in ctx.catalogue.visible(ctx.now)
        if (channel_id is None or video.channel_id == channel_id)
        and (after is None or video.published_at >= after)
        and (before is None or video.published_at < before)
        and terms <= _searchable(video)
    ]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _searchable(video: Video) -> set[str]:
    return _words(video.title) | _words(" ".join(video.tags))


def _relevance(ctx: Context, terms: set[str]) -> Callable[[Video], tuple]:
    def key(video: Video) -> tuple:
        hits = 2 * len(terms & _words(video.title)) + len(terms & _words(" ".join(video.tags)))
        return (-hits, -ctx.catalogue.views_at(video, ctx.now), video.id)

    return key


_ORDERS: dict[str, Callable[[Context, set[str]], Callable[[Video], tuple]]] = {
    "date": lambda ctx, terms: lambda v: (-v.published_at.timestamp(), v.id),
    "rating": lambda ctx, terms: lambda v: (-ctx.catalogue.likes_at(v, ctx.now), v.id),
    "relevance": _relevance,
    "title": lambda ctx, terms: lambda v: (v.title.lower(), v.id),
    "viewCount": lambda ctx, terms: lambda v: (-ctx.catalogue.views_at(v, ctx.now), v.id),
}


def video_categories_list(ctx: Context, query: Query) -> dict:
    query.parts(("snippet",))
    ids = query.ids()
    if ids is None and query.get("regionCode") is None:
        raise _no_filter("id, regionCode")
    items = [
        _with_etag(
            {
                "kind": "youtube#videoCategory",
                "etag": "",
                "id": category_id,
                "snippet": {"channelId": YOUTUBE_CHANNEL, "title": title, "assignable": assignable},
            }
        )
        for category_id, title, assignable in VIDEO_CATEGORIES
        if ids is None or category_id in ids
    ]
    # This one list response carries no pageInfo, as in the reference.
    return _with_etag({"kind": "youtube#videoCategoryListResponse", "etag": "", "items": items})


# resource path → (method name for quota and stats, handler)
METHODS: dict[str, tuple[str, Callable[[Context, Query], dict]]] = {
    "videos": ("videos.list", videos_list),
    "channels": ("channels.list", channels_list),
    "playlistItems": ("playlistItems.list", playlist_items_list),
    "search": ("search.list", search_list),
    "videoCategories": ("videoCategories.list", video_categories_list),
}
