"""The fake YouTube speaks the Data API v3 and channel feeds as YouTube does, through real HTTP on loopback.

Field sets below were read off the captured responses in ../shared/reference/youtube-api (file named beside each);
keys a reference has that do not apply today or to a stand-in are named and left out on purpose.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.fakeyoutubekit import KEY, NOW, call, get, make_catalogue, ok, post
from tubelens.devtools.fakeyoutube import Catalogue, FakeYouTube, ServerFaults
from tubelens.devtools.fakeyoutube.api import page_token

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
DIGITS = re.compile(r"\d+")
THUMBNAIL_SIZES = {
    "default": (120, 90),
    "medium": (320, 180),
    "high": (480, 360),
    "standard": (640, 480),
    "maxres": (1280, 720),
}
# videos_list_snippet_contentDetails_statistics_oiKj0Z_Xnjc.json and videos_videos_info_single.json
VIDEO_KEYS = {"kind", "etag", "id", "snippet", "contentDetails", "statistics"}
VIDEO_SNIPPET = {
    "publishedAt",
    "channelId",
    "title",
    "description",
    "thumbnails",
    "channelTitle",
    "tags",
    "categoryId",
    "liveBroadcastContent",
    "defaultLanguage",
    "localized",
    "defaultAudioLanguage",
}
VIDEO_CONTENT_DETAILS = {
    "duration",
    "dimension",
    "definition",
    "caption",
    "licensedContent",
    "regionRestriction",
    "projection",
}
NO_REGION_BLOCKS = {"regionRestriction"}  # only for videos blocked somewhere; none are
VIDEO_STATISTICS = {"viewCount", "likeCount", "dislikeCount", "favoriteCount", "commentCount"}
DISLIKES_GONE = {"dislikeCount"}  # YouTube stopped returning it in December 2021
# channels_info_multiple.json (brandingSettings is a part we are not asked for)
CHANNEL_KEYS = {"kind", "etag", "id", "snippet", "contentDetails", "statistics"}
CHANNEL_SNIPPET = {"title", "description", "customUrl", "publishedAt", "thumbnails", "localized", "country"}
CHANNEL_STATISTICS = {"viewCount", "subscriberCount", "hiddenSubscriberCount", "videoCount"}
# playlist_items_playlist_items_paged_1.json
PLAYLIST_ITEM_SNIPPET = {
    "publishedAt",
    "channelId",
    "title",
    "description",
    "thumbnails",
    "channelTitle",
    "playlistId",
    "position",
    "resourceId",
}
# search_search_by_keywords_p1.json
SEARCH_RESPONSE = {"kind", "etag", "nextPageToken", "regionCode", "pageInfo", "items"}
SEARCH_SNIPPET = {
    "publishedAt",
    "channelId",
    "title",
    "description",
    "thumbnails",
    "channelTitle",
    "liveBroadcastContent",
}
# categories_video_category_by_region.json: no pageInfo in this one
CATEGORY_RESPONSE = {"kind", "etag", "items"}
REFERENCE_CATEGORIES = {
    "2": "Autos & Vehicles",
    "10": "Music",
    "17": "Sports",
    "20": "Gaming",
    "22": "People & Blogs",
    "24": "Entertainment",
    "27": "Education",
    "28": "Science & Technology",
}
ATOM = {
    "atom": "http://www.w3.org/2005/Atom",
    "yt": "http://www.youtube.com/xml/schemas/2015",
    "media": "http://search.yahoo.com/mrss/",
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return make_catalogue()


@pytest.fixture(scope="module")
def youtube(catalogue: Catalogue) -> Iterator[FakeYouTube]:
    """A shared server with a still clock, for tests that only read."""
    with FakeYouTube(catalogue, tick=False) as server:
        yield server


@pytest.fixture
def fresh(catalogue: Catalogue) -> Iterator[FakeYouTube]:
    """A server of one's own with a still clock, for tests that move the clock or spend quota."""
    with FakeYouTube(catalogue, tick=False, quota_per_day=250) as server:
        yield server


def channel_with_most_uploads(catalogue: Catalogue) -> str:
    return max(catalogue.channels, key=lambda c: len(catalogue.uploads(c.id, NOW))).id


# formats


def test_a_video_has_the_fields_of_the_reference_with_statistics_as_strings(
    youtube: FakeYouTube, catalogue: Catalogue
) -> None:
    video = next(v for v in catalogue.visible(NOW) if v.tags and v.has_maxres)
    body = ok(youtube, "videos", part="snippet,contentDetails,statistics", id=video.id)
    assert set(body) == {"kind", "etag", "pageInfo", "items"}
    assert body["kind"] == "youtube#videoListResponse"
    assert body["pageInfo"] == {"totalResults": 1, "resultsPerPage": 1}
    (item,) = body["items"]
    assert set(item) == VIDEO_KEYS and item["kind"] == "youtube#video" and item["id"] == video.id
    assert set(item["snippet"]) == VIDEO_SNIPPET
    assert set(item["contentDetails"]) == VIDEO_CONTENT_DETAILS - NO_REGION_BLOCKS
    assert set(item["statistics"]) == VIDEO_STATISTICS - DISLIKES_GONE
    assert all(isinstance(v, str) and DIGITS.fullmatch(v) for v in item["statistics"].values())
    assert int(item["statistics"]["viewCount"]) == catalogue.views_at(video, NOW)
    snippet, details = item["snippet"], item["contentDetails"]
    assert TIMESTAMP.fullmatch(snippet["publishedAt"])
    assert snippet["channelId"] == video.channel_id and snippet["categoryId"] == video.category_id
    assert snippet["localized"] == {"title": video.title, "description": video.description}
    assert {name: (t["width"], t["height"]) for name, t in snippet["thumbnails"].items()} == THUMBNAIL_SIZES
    assert snippet["thumbnails"]["high"]["url"] == f"{youtube.base_url}/vi/{video.id}/hqdefault.jpg"
    assert re.fullmatch(r"PT(\d+H)?(\d+M)?(\d+S)?", details["duration"]) and details["caption"] in ("true", "false")
    assert isinstance(details["licensedContent"], bool)


def test_parts_select_what_a_video_carries_and_videos_without_tags_leave_the_key_out(
    youtube: FakeYouTube, catalogue: Catalogue
) -> None:
    untagged = next(v for v in catalogue.visible(NOW) if not v.tags)
    (item,) = ok(youtube, "videos", part="statistics", id=untagged.id)["items"]
    assert set(item) == {"kind", "etag", "id", "statistics"}
    (item,) = ok(youtube, "videos", part="snippet", id=untagged.id)["items"]
    assert "tags" not in item["snippet"]
    without_maxres = next(v for v in catalogue.visible(NOW) if not v.has_maxres)
    (item,) = ok(youtube, "videos", part="snippet", id=without_maxres.id)["items"]
    assert "maxres" not in item["snippet"]["thumbnails"]


def test_a_channel_has_the_fields_of_the_reference(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    channel = catalogue.channels[0]
    body = ok(youtube, "channels", part="snippet,statistics,contentDetails", id=channel.id)
    assert body["kind"] == "youtube#channelListResponse"
    (item,) = body["items"]
    assert set(item) == CHANNEL_KEYS and item["kind"] == "youtube#channel"
    assert set(item["snippet"]) == CHANNEL_SNIPPET
    assert set(item["statistics"]) == CHANNEL_STATISTICS
    assert item["statistics"]["hiddenSubscriberCount"] is False
    assert item["contentDetails"] == {"relatedPlaylists": {"likes": "", "uploads": "UU" + channel.id[2:]}}
    subscribers = int(item["statistics"]["subscriberCount"])
    assert subscribers <= channel.subscribers and len(str(subscribers).rstrip("0")) <= 3  # three significant figures
    uploads = catalogue.uploads(channel.id, NOW)
    assert item["statistics"]["videoCount"] == str(len(uploads))
    assert item["statistics"]["viewCount"] == str(sum(catalogue.views_at(v, NOW) for v in uploads))
    avatar = get(item["snippet"]["thumbnails"]["default"]["url"])
    assert avatar.status == 200 and avatar.headers["Content-Type"] == "image/jpeg"
    assert ok(youtube, "channels", part="id", forHandle=channel.handle)["items"][0]["id"] == channel.id


def test_ids_look_like_youtube_ids(catalogue: Catalogue) -> None:
    for channel in catalogue.channels:
        assert re.fullmatch(r"UC[A-Za-z0-9_-]{21}[AQgw]", channel.id)  # 16 bytes of base64url: the last char has 2 bits
        assert channel.uploads_playlist_id == "UU" + channel.id[2:]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]", v.id) for v in catalogue.videos)
    assert len({v.id for v in catalogue.videos}) == len(catalogue.videos)


def test_categories_are_youtubes(youtube: FakeYouTube) -> None:
    body = ok(youtube, "videoCategories", part="snippet", regionCode="US")
    assert set(body) == CATEGORY_RESPONSE and body["kind"] == "youtube#videoCategoryListResponse"
    titles = {item["id"]: item["snippet"]["title"] for item in body["items"]}
    assert REFERENCE_CATEGORIES.items() <= titles.items() and len(titles) == 32
    assert all(set(item["snippet"]) == {"channelId", "title", "assignable"} for item in body["items"])


# paging


def test_paging_the_uploads_playlist_visits_every_upload_once_newest_first(
    youtube: FakeYouTube, catalogue: Catalogue
) -> None:
    channel = catalogue.channel(channel_with_most_uploads(catalogue))
    assert channel is not None
    seen, positions, token, pages = [], [], None, []
    while True:
        page = ok(
            youtube,
            "playlistItems",
            part="snippet,contentDetails",
            playlistId=channel.uploads_playlist_id,
            maxResults=7,
            pageToken=token,
        )
        pages.append(page)
        assert set(page["items"][0]["snippet"]) == PLAYLIST_ITEM_SNIPPET
        seen += [item["contentDetails"]["videoId"] for item in page["items"]]
        positions += [item["snippet"]["position"] for item in page["items"]]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert seen == [v.id for v in catalogue.uploads(channel.id, NOW)]
    assert positions == list(range(len(seen)))
    assert pages[0]["pageInfo"] == {"totalResults": len(seen), "resultsPerPage": 7}
    assert "prevPageToken" not in pages[0] and pages[0]["nextPageToken"] == page_token(7)
    previous = pages[1]["prevPageToken"]
    back = ok(
        youtube, "playlistItems", part="id", playlistId=channel.uploads_playlist_id, maxResults=7, pageToken=previous
    )
    assert [item["id"] for item in back["items"]] == [item["id"] for item in pages[0]["items"]]


def test_page_tokens_are_youtubes_encoding() -> None:
    # CAUQAA, CAoQAA and CBkQAA are the next-page tokens of the references after 5, 10 and 25 results.
    assert [page_token(n) for n in (5, 10, 25)] == ["CAUQAA", "CAoQAA", "CBkQAA"]


def test_search_by_channel_pages_through_every_video_once_newest_first(
    youtube: FakeYouTube, catalogue: Catalogue
) -> None:
    channel_id = channel_with_most_uploads(catalogue)
    found, token = [], None
    while True:
        params = {"channelId": channel_id, "type": "video", "order": "date", "maxResults": 10, "pageToken": token}
        page = ok(youtube, "search", part="snippet", **params)
        assert set(page) <= SEARCH_RESPONSE | {"prevPageToken"} and page["kind"] == "youtube#searchListResponse"
        found += [item["id"]["videoId"] for item in page["items"]]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert found == [v.id for v in catalogue.uploads(channel_id, NOW)]


def test_search_by_keyword_matches_title_and_tag_words_and_escapes_titles_as_youtube_does(
    youtube: FakeYouTube, catalogue: Catalogue
) -> None:
    page = ok(youtube, "search", part="snippet", q="believe", type="video", order="viewCount", maxResults=50)
    expected = [v for v in catalogue.visible(NOW) if "believe" in v.title.lower().split()]
    assert expected and {item["id"]["videoId"] for item in page["items"]} == {v.id for v in expected}
    views = [catalogue.views_at(catalogue.video(item["id"]["videoId"]), NOW) for item in page["items"]]
    assert views == sorted(views, reverse=True)
    item = page["items"][0]
    assert set(item) == {"kind", "etag", "id", "snippet"} and item["id"]["kind"] == "youtube#video"
    assert set(item["snippet"]) == SEARCH_SNIPPET and set(item["snippet"]["thumbnails"]) == {
        "default",
        "medium",
        "high",
    }
    assert "You Won&#39;t Believe This" in item["snippet"]["title"]
    tagged = next(v for v in catalogue.visible(NOW) if v.tags)
    by_tag = ok(youtube, "search", part="snippet", q=tagged.tags[-1], maxResults=50)
    assert by_tag["pageInfo"]["totalResults"] >= 1


def test_search_filters_by_publication_time(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    after = datetime(2025, 5, 30, tzinfo=UTC)
    page = ok(youtube, "search", part="snippet", publishedAfter="2025-05-30T00:00:00Z", order="date", maxResults=50)
    expected = [v.id for v in catalogue.visible(NOW) if v.published_at >= after]
    assert [item["id"]["videoId"] for item in page["items"]] == expected


# errors


def test_more_than_50_ids_is_the_real_400(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    ids = [v.id for v in catalogue.visible(NOW)]
    assert len(ok(youtube, "videos", part="id", id=",".join(ids[:50]))["items"]) == 50
    status, body = call(youtube, "videos", part="id", id=",".join(ids[:51]))
    assert status == 400
    assert body == {
        "error": {
            "code": 400,
            "message": "The request specifies an invalid filter parameter.",
            "errors": [
                {
                    "message": "The request specifies an invalid filter parameter.",
                    "domain": "youtube.parameter",
                    "reason": "invalidFilters",
                    "location": "parameters.",
                    "locationType": "other",
                }
            ],
        }
    }


@pytest.mark.parametrize(
    ("resource", "params", "status", "reason"),
    [
        ("videos", {"part": "snippet", "id": "x", "key": None}, 403, "forbidden"),
        ("videos", {"id": "x"}, 400, "required"),
        ("videos", {"part": "snippet,bogus", "id": "x"}, 400, "unknownPart"),
        ("videos", {"part": "snippet"}, 400, "missingRequiredParameter"),
        ("playlistItems", {"part": "snippet", "playlistId": "UUnothingnothingnothing0"}, 404, "playlistNotFound"),
        ("playlistItems", {"part": "snippet", "playlistId": "x", "maxResults": 51}, 400, "invalidParameter"),
        ("search", {"part": "snippet", "pageToken": "garbage"}, 400, "invalidPageToken"),
        ("search", {"part": "snippet", "publishedAfter": "2025-05-30T00:00:00"}, 400, "invalidParameter"),
        ("comments", {"part": "snippet"}, 404, "notFound"),
    ],
)
def test_errors_come_in_googles_envelope(
    youtube: FakeYouTube, resource: str, params: dict, status: int, reason: str
) -> None:
    got_status, body = call(youtube, resource, **params)
    assert got_status == status
    error = body["error"]
    assert error["code"] == status and error["errors"][0]["reason"] == reason
    assert error["errors"][0]["message"] == error["message"]


def test_unknown_ids_are_left_out_not_errors(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    video = catalogue.visible(NOW)[0]
    body = ok(youtube, "videos", part="id", id=f"{video.id},AAAAAAAAAAA")
    assert [item["id"] for item in body["items"]] == [video.id]


# quota


def test_quota_is_counted_per_key_at_documented_costs_then_refused_in_the_real_format(
    fresh: FakeYouTube, catalogue: Catalogue
) -> None:
    video, channel = catalogue.visible(NOW)[0], catalogue.channels[0]
    for _ in range(30):
        ok(fresh, "videos", part="statistics", id=video.id)
    for _ in range(2):
        ok(fresh, "search", part="snippet", q="review")
    ok(fresh, "playlistItems", part="id", playlistId=channel.uploads_playlist_id)
    ok(fresh, "channels", part="id", id=channel.id, key="other-key")
    call(fresh, "videos", part="id", id="x", key=None)  # no key: nobody to charge
    call(fresh, "videos", id="x")  # invalid, still charged as on YouTube
    stats = json.loads(get(f"{fresh.base_url}/_fake/stats").data)
    assert stats["units"] == {KEY: 30 + 2 * 100 + 1 + 1, "other-key": 1}
    assert stats["requests"]["videos.list"] == 32 and stats["requests"]["search.list"] == 2
    assert stats == fresh.stats()

    status, body = call(fresh, "search", part="snippet", q="review")  # 232 + 100 > 250
    assert status == 403
    message = (
        'The request cannot be completed because you have exceeded your <a href="/youtube/v3/getting-started#quota">'
        "quota</a>."
    )
    assert body == {
        "error": {
            "code": 403,
            "message": message,
            "errors": [{"message": message, "domain": "youtube.quota", "reason": "quotaExceeded"}],
        }
    }
    for _ in range(18):
        ok(fresh, "videos", part="id", id=video.id)
    assert call(fresh, "videos", part="id", id=video.id)[0] == 403
    assert fresh.stats()["units"][KEY] == 250 and fresh.stats()["quota_refused"] == 2

    fresh.advance(24 * 3600)  # a new day in Pacific time
    assert call(fresh, "videos", part="id", id=video.id)[0] == 200
    assert fresh.stats()["units"] == {KEY: 1} and fresh.stats()["units_total"][KEY] == 251


def test_only_the_configured_keys_are_accepted(catalogue: Catalogue) -> None:
    with FakeYouTube(catalogue, api_keys={"good"}) as server:
        assert call(server, "videoCategories", part="snippet", regionCode="US", key="good")[0] == 200
        status, body = call(server, "videoCategories", part="snippet", regionCode="US", key="bad")
        assert status == 400 and body["error"]["message"] == "API key not valid. Please pass a valid API key."


# faults


def test_injected_5xx_and_429_come_first_then_answers_return(catalogue: Catalogue) -> None:
    with FakeYouTube(catalogue, tick=False, faults=ServerFaults(server_errors=2, rate_limits=1)) as server:
        video = catalogue.visible(NOW)[0]
        answers = [call(server, "videos", part="id", id=video.id) for _ in range(4)]
        assert [status for status, _ in answers[:2]] in ([500, 500], [500, 503], [503, 500], [503, 503])
        assert all(body["error"]["errors"][0]["reason"] == "backendError" for _, body in answers[:2])
        assert answers[2][0] == 429 and answers[2][1]["error"]["errors"][0]["reason"] == "rateLimitExceeded"
        assert answers[3][0] == 200
        stats = server.stats()
        assert stats["faults"] == {"server_error": 2, "rate_limited": 1, "quota_exceeded": 0, "delayed": 0}
        assert stats["units"] == {KEY: 4}  # failed calls were paid for, as the crawler assumes


def test_faults_are_set_over_http_and_reach_only_their_targets(fresh: FakeYouTube, catalogue: Catalogue) -> None:
    video = catalogue.visible(NOW)[0]
    response = post(f"{fresh.base_url}/_fake/faults", {"server_error_rate": 1.0, "targets": ["thumbnails"]})
    assert response.status == 200 and json.loads(response.data)["targets"] == ["thumbnails"]
    assert get(f"{fresh.base_url}/vi/{video.id}/mqdefault.jpg").status in (500, 503)
    assert call(fresh, "videos", part="id", id=video.id)[0] == 200
    post(f"{fresh.base_url}/_fake/faults", {"rate_limit_rate": 0.5, "delay_ms": 30, "targets": ["api", "feeds"]})
    started = time.monotonic()
    statuses = [call(fresh, "videos", part="id", id=video.id)[0] for _ in range(20)]
    assert time.monotonic() - started >= 20 * 0.03
    assert set(statuses) == {200, 429}
    assert get(f"{fresh.base_url}/vi/{video.id}/mqdefault.jpg").status == 200
    post(f"{fresh.base_url}/_fake/faults", {"quota_exceeded": True})
    status, body = call(fresh, "videos", part="id", id=video.id)
    assert status == 403 and body["error"]["errors"][0]["reason"] == "quotaExceeded"
    assert post(f"{fresh.base_url}/_fake/faults", {"no_such_fault": 1}).status == 400
    faults = fresh.stats()["faults"]
    assert faults["server_error"] == 1 and faults["rate_limited"] == statuses.count(429) and faults["delayed"] == 20


# the clock


def test_advancing_the_clock_reveals_new_uploads_and_views_only_grow(fresh: FakeYouTube, catalogue: Catalogue) -> None:
    channel = catalogue.channel(channel_with_most_uploads(catalogue))
    assert channel is not None
    upcoming = [v for v in catalogue.videos if v.channel_id == channel.id and v.published_at > NOW]
    assert upcoming, "the catalogue schedules uploads after `now`"
    first = min(upcoming, key=lambda v: v.published_at)
    assert ok(fresh, "videos", part="statistics", id=first.id)["items"] == []
    assert get(f"{fresh.base_url}/vi/{first.id}/mqdefault.jpg").status == 404

    views = []
    step = (first.published_at - NOW).total_seconds() + 60
    response = post(f"{fresh.base_url}/_fake/clock", {"advance_seconds": step})
    assert json.loads(response.data)["now"] == fresh.stats()["now"]
    for _ in range(6):
        (item,) = ok(fresh, "videos", part="statistics", id=first.id)["items"]
        views.append(int(item["statistics"]["viewCount"]))
        fresh.advance(12 * 3600)
    assert views == sorted(views) and views[0] < views[-1]
    uploads = ok(fresh, "playlistItems", part="id", playlistId=channel.uploads_playlist_id, maxResults=50)
    assert uploads["pageInfo"]["totalResults"] > len(catalogue.uploads(channel.id, NOW))
    assert post(f"{fresh.base_url}/_fake/clock", {"advance_seconds": -1}).status == 400


def test_a_ticking_clock_starts_at_the_catalogues_now(catalogue: Catalogue) -> None:
    with FakeYouTube(catalogue) as server:
        time.sleep(0.05)
        elapsed = (server.now() - NOW).total_seconds()
        assert 0.05 <= elapsed < 5


# channel feeds


def feed(youtube: FakeYouTube, channel_id: str) -> ET.Element:
    response = get(youtube.feed_url, {"channel_id": channel_id})
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/xml")
    return ET.fromstring(response.data)


def test_a_feed_has_the_15_newest_uploads_newest_first(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    channel = catalogue.channels[0]
    root = feed(youtube, channel.id)
    entries = root.findall("atom:entry", ATOM)
    assert len(entries) == 15
    ids = [e.findtext("yt:videoId", namespaces=ATOM) for e in entries]
    assert ids == [v.id for v in catalogue.uploads(channel.id, NOW)[:15]]
    published = [e.findtext("atom:published", namespaces=ATOM) for e in entries]
    assert published == sorted(published, reverse=True)
    entry = entries[0]
    assert entry.findtext("atom:id", namespaces=ATOM) == f"yt:video:{ids[0]}"
    assert entry.findtext("yt:channelId", namespaces=ATOM) == channel.id
    group = entry.find("media:group", ATOM)
    assert group is not None
    thumbnail = group.find("media:thumbnail", ATOM)
    assert thumbnail is not None and thumbnail.attrib["url"] == f"{youtube.base_url}/vi/{ids[0]}/hqdefault.jpg"
    assert (thumbnail.attrib["width"], thumbnail.attrib["height"]) == ("480", "360")
    views = group.find("media:community/media:statistics", ATOM)
    rating = group.find("media:community/media:starRating", ATOM)
    assert views is not None and rating is not None
    (item,) = ok(youtube, "videos", part="statistics", id=ids[0])["items"]
    assert views.attrib["views"] == item["statistics"]["viewCount"]
    assert rating.attrib == {"count": item["statistics"]["likeCount"], "average": "5.00", "min": "1", "max": "5"}


def test_some_feeds_drop_the_uc_prefix_at_feed_level_only(youtube: FakeYouTube, catalogue: Catalogue) -> None:
    quirky = [c for c in catalogue.channels if c.feed_id_without_uc]
    plain = [c for c in catalogue.channels if not c.feed_id_without_uc]
    assert quirky and plain
    for channel in quirky + plain:
        root = feed(youtube, channel.id)
        expected = channel.id[2:] if channel.feed_id_without_uc else channel.id
        assert root.findtext("yt:channelId", namespaces=ATOM) == expected
        assert root.findtext("atom:id", namespaces=ATOM) == f"yt:channel:{expected}"
        entry_ids = {e.findtext("yt:channelId", namespaces=ATOM) for e in root.findall("atom:entry", ATOM)}
        assert entry_ids == {channel.id}


def test_an_unknown_feed_is_404(youtube: FakeYouTube) -> None:
    assert get(youtube.feed_url, {"channel_id": "UCnobodynobodynobodynobo"}).status == 404


# determinism


def test_two_servers_of_one_seed_answer_alike(catalogue: Catalogue) -> None:
    twin = make_catalogue()
    params = {"part": "snippet,contentDetails,statistics", "id": ",".join(v.id for v in catalogue.visible(NOW)[:50])}
    with FakeYouTube(catalogue, tick=False) as one, FakeYouTube(twin, tick=False) as two:
        a, b = (
            get(f"{s.api_base}/videos", {**params, "key": KEY}).data.replace(s.base_url.encode(), b"BASE")
            for s in (one, two)
        )
        assert a == b and len(json.loads(a)["items"]) == 50
