"""The genre model (seed 003): GAP worked out by hand; padded, packed batches that answer as each video alone;
training that is deterministic and saves whole; the TorchServe handler rebuilding the trainer's own network; clear
errors for bad objects and bad requests; and a model that learns genre from real stand-in media on channels it never
saw in training.

The learning test renders real MP4s with the stand-in's `media_mp4` and reads their audio with the preprocessor's
`audio_features`, as the pipeline does. Frame vectors are synthetic instead: the real backbone on each video's frames
would add about a minute on this two-core machine. They keep what matters here: in the stand-in, frames follow the
channel's look (a centre per channel, each video and frame jittered around it) and say nothing of its category.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from rich.console import Console

from tests.datasetkit import NOW, put_array
from tubelens.devtools.fakeyoutube import Catalogue, Video
from tubelens.devtools.fakeyoutube.media import media_mp4
from tubelens.errors import InvalidInput, NotFound
from tubelens.modelkit import ts_handler
from tubelens.objects.local import LocalObjectStore
from tubelens.preprocessor.audio import audio_features
from tubelens.preprocessor.media import MP4
from tubelens.trainer import evaluate as ev
from tubelens.trainer import metrics as m
from tubelens.trainer.baselines import MAJORITY
from tubelens.trainer.genre import (
    AUDIO_ONLY,
    FRAME_DIM,
    FRAMES_ONLY,
    TWO_STREAM,
    VARIANTS,
    GenreInputs,
    GenreModel,
    GenreTrainConfig,
    build_genre_module,
    load_genre,
    load_genre_inputs,
    train_genre,
)
from tubelens.trainer.splits import channel_split, random_split, time_split

BANDS = 8
GENRES = ["10", "17", "20", "2"]
SMALL = GenreTrainConfig(hidden=8, fusion_hidden=8, max_epochs=12, patience=4, seed=3)
TOLERANCE = 1e-6


# --- synthetic sequences: a planted genre signal in both streams, for the mechanics ---------------------------------


def synthetic_inputs(seed: int, count: int, *, max_length: int = 12) -> tuple[GenreInputs, np.ndarray]:
    """`count` videos of varying length (1 step included) whose frames and audio both lean towards their genre."""
    rng = np.random.default_rng(seed)
    genre_of = np.arange(count) % len(GENRES)
    frame_centres = rng.standard_normal((len(GENRES), FRAME_DIM))
    audio_centres = rng.normal(0, 3, (len(GENRES), BANDS)) + 10  # log-mel-like levels, far from standardized
    lengths = rng.integers(1, max_length + 1, count)
    lengths[0] = 1
    frames, audio = [], []
    for genre, length in zip(genre_of, lengths, strict=True):
        vectors = frame_centres[genre] + rng.standard_normal((length, FRAME_DIM))
        frames.append((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))
        audio.append((audio_centres[genre] + rng.normal(0, 1, (length + 2, BANDS))).astype(np.float32))
    labels = np.asarray(GENRES, dtype=object)[genre_of]
    return GenreInputs(frames, audio, np.arange(count, dtype=np.int64)), labels


@dataclass
class Trained:
    model: GenreModel
    frames_only: GenreModel
    head_dir: Path
    frames_only_dir: Path
    unseen: GenreInputs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    inputs, labels = synthetic_inputs(seed=1, count=48)
    train, val = inputs.select(range(36)), inputs.select(range(36, 48))
    options = {"labels": GENRES, "config": SMALL, "quiet": True}
    model = train_genre(train, labels[:36], val, labels[36:], **options)
    frames_only = train_genre(train, labels[:36], val, labels[36:], streams=VARIANTS[FRAMES_ONLY], **options)
    root = tmp_path_factory.mktemp("genre")
    model.save(root / "two_stream")
    frames_only.save(root / "frames_only")
    unseen, _ = synthetic_inputs(seed=9, count=6, max_length=80)  # some longer than max_steps
    return Trained(model, frames_only, root / "two_stream", root / "frames_only", unseen)


# --- GAP -----------------------------------------------------------------------------------------------------------


def test_gap_pools_every_rows_top_k_and_averages_precision_over_the_true_labels() -> None:
    labels = ["x", "y", "z"]
    scores = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    truth = ["x", "y"]
    # k=2 pools A-x .6 (hit), B-x .5, B-y .4 (hit), A-y .3: precisions 1/1 and 2/3 over two positives.
    assert m.gap(truth, scores, labels, k=2) == pytest.approx((1 + 2 / 3) / 2)
    # k=1 pools A-x .6 (hit), B-x .5: B's true label is never ranked, a positive never found.
    assert m.gap(truth, scores, labels, k=1) == pytest.approx(1 / 2)
    # k beyond the label count ranks every label: the same list as k=2 plus misses after the last hit.
    assert m.gap(truth, scores, labels, k=20) == pytest.approx(5 / 6)


def test_gap_ranks_confident_answers_across_rows() -> None:
    labels = ["x", "y", "z"]
    scores = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.1, 0.7]])
    # Top-1 pooled: C-z .7 (hit), A-x .6 (hit), B-x .5: precisions 1 and 1 over three positives.
    assert m.gap(["x", "y", "z"], scores, labels, k=1) == pytest.approx(2 / 3)
    assert m.gap(["x", "y", "z"], np.eye(3)[[0, 1, 2]], labels, k=3) == 1.0
    # A true label outside `labels` can never be found.
    assert m.gap(["x", "w"], scores[:2], labels, k=3) == pytest.approx(1 / 2)
    assert math.isnan(m.gap([], np.zeros((0, 3)), labels))
    with pytest.raises(ValueError, match="k >= 1"):
        m.gap(["x"], scores[:1], labels, k=0)


def test_classification_metrics_carry_gap_when_asked() -> None:
    scores = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    result = m.classification_metrics(["x", "y"], ["x", "x"], labels=["x", "y", "z"], scores=scores, gap_k=20)
    assert (result.gap_k, result.gap) == (20, pytest.approx(5 / 6))
    assert json.loads(result.to_json())["gap"] == pytest.approx(5 / 6)
    assert m.classification_metrics(["x"], ["x"], labels=["x"], scores=scores[:1, :1]).gap is None


# --- sequences -----------------------------------------------------------------------------------------------------


def test_long_sequences_are_sampled_uniformly_and_short_ones_kept_whole() -> None:
    assert ts_handler.sample_steps(3, 64).tolist() == [0, 1, 2]
    assert ts_handler.sample_steps(1, 64).tolist() == [0]
    assert ts_handler.sample_steps(100, 4).tolist() == [12, 37, 62, 87]  # the middle of each quarter
    assert ts_handler.sample_steps(10, 1).tolist() == [5]
    assert len(ts_handler.sample_steps(10_000, 64)) == 64


def test_padding_never_changes_a_videos_answer(trained: Trained) -> None:
    together = trained.model.predict_proba(trained.unseen)
    alone = np.vstack([trained.model.predict_proba(trained.unseen.select([i])) for i in range(len(trained.unseen))])

    assert together.shape == (len(trained.unseen), len(GENRES))
    np.testing.assert_allclose(together.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(together, alone, atol=TOLERANCE)


def test_what_the_padding_holds_is_never_read(trained: Trained) -> None:
    sequences = [torch.from_numpy(steps) for steps in trained.unseen.audio[:3]]
    steps, lengths = ts_handler.pad_sequences(sequences)
    frames = ts_handler.pad_sequences([torch.from_numpy(steps) for steps in trained.unseen.frames[:3]])
    garbage = steps.clone()
    for row, length in enumerate(lengths.tolist()):
        garbage[row, length:] = 1e6

    with torch.no_grad():
        clean = trained.model.network({"frames": frames, "audio": (steps, lengths)})
        dirty = trained.model.network({"frames": frames, "audio": (garbage, lengths)})

    assert lengths.tolist() != [lengths.max().item()] * 3, "the batch must need padding"
    torch.testing.assert_close(clean, dirty, rtol=0, atol=0)


def test_inputs_select_by_table_rows() -> None:
    inputs, _ = synthetic_inputs(seed=2, count=5)
    inputs = replace(inputs, rows=np.array([1, 3, 4, 6, 8]))
    mask = np.zeros(10, dtype=bool)
    mask[[3, 6, 7]] = True

    picked = inputs.within(mask)

    assert picked.rows.tolist() == [3, 6]
    assert picked.frames[0] is inputs.frames[1] and picked.audio[1] is inputs.audio[3]
    assert picked.bands == BANDS and len(picked) == 2


# --- training ------------------------------------------------------------------------------------------------------


def test_training_is_deterministic_for_a_seed_and_leaves_global_state_alone() -> None:
    inputs, labels = synthetic_inputs(seed=4, count=24)
    train, val = inputs.select(range(18)), inputs.select(range(18, 24))
    threads, rng_state = torch.get_num_threads(), torch.random.get_rng_state()

    def weights(seed: int) -> dict[str, torch.Tensor]:
        config = replace(SMALL, max_epochs=4, seed=seed)
        return train_genre(
            train, labels[:18], val, labels[18:], labels=GENRES, config=config, quiet=True
        ).network.state_dict()

    first, again, other = weights(1), weights(1), weights(2)

    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_a_model_saves_and_loads_back_answering_identically(trained: Trained) -> None:
    loaded = load_genre(trained.head_dir)

    assert loaded.config.to_dict() == trained.model.config.to_dict()
    np.testing.assert_array_equal(loaded.predict_proba(trained.unseen), trained.model.predict_proba(trained.unseen))
    assert list(loaded.predict(trained.unseen)) == list(trained.model.predict(trained.unseen))
    saved = json.loads((trained.head_dir / "head.json").read_text())
    assert saved["kind"] == "genre" and saved["labels"] == GENRES
    assert saved["architecture"]["streams"] == ["frames", "audio"] and saved["architecture"]["audio_bands"] == BANDS
    audio_steps = np.concatenate(trained.unseen.audio)
    assert len(saved["audio_standardizer"]["mean"]) == BANDS
    assert abs(np.mean(saved["audio_standardizer"]["mean"]) - audio_steps.mean()) < 1.5  # fitted, not identity
    assert saved["outcome"]["epochs"] >= saved["outcome"]["best_epoch"] >= 1
    assert json.loads((trained.frames_only_dir / "head.json").read_text())["audio_standardizer"] is None


def test_one_stream_models_read_only_their_stream(trained: Trained) -> None:
    assert trained.frames_only.streams == ("frames",)
    silent = replace(trained.unseen, audio=[np.zeros((0, BANDS), np.float32)] * len(trained.unseen))
    np.testing.assert_array_equal(
        trained.frames_only.predict_proba(silent), trained.frames_only.predict_proba(trained.unseen)
    )
    two_stream_weights = trained.model.network.state_dict()
    assert set(trained.frames_only.network.state_dict()) == {
        name for name in two_stream_weights if not name.startswith("encoders.audio.")
    }


def test_training_refuses_what_it_cannot_learn_from() -> None:
    inputs, labels = synthetic_inputs(seed=5, count=8)
    with pytest.raises(ValueError, match="streams"):
        train_genre(inputs, labels, inputs, labels, labels=GENRES, streams=("pixels",), quiet=True)
    with pytest.raises(ValueError, match="validation"):
        train_genre(inputs, labels, inputs, np.array(["99"] * 8, dtype=object), labels=GENRES, quiet=True)


# --- serving -------------------------------------------------------------------------------------------------------


def _requests(inputs: GenreInputs) -> list[dict]:
    return [{"frames": f.tolist(), "audio": a.tolist()} for f, a in zip(inputs.frames, inputs.audio, strict=True)]


def test_the_handler_builds_the_trainers_network_and_answers_as_the_model_does(trained: Trained) -> None:
    service = ts_handler.load_service(trained.head_dir)
    ours = {name: tensor.shape for name, tensor in build_genre_module(trained.model.config).state_dict().items()}
    theirs = {name: tensor.shape for name, tensor in service.network.state_dict().items()}
    assert isinstance(service, ts_handler.GenreService) and ours == theirs

    answers = service.answer(_requests(trained.unseen))

    expected = trained.model.predict_proba(trained.unseen)
    np.testing.assert_allclose([answer["probabilities"] for answer in answers], expected, atol=TOLERANCE)
    assert [answer["label"] for answer in answers] == list(trained.model.predict(trained.unseen))
    assert all(answer["labels"] == GENRES for answer in answers)


def test_torchserves_entry_point_answers_one_object_per_video(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ts_handler, "_service", None)
    context = SimpleNamespace(system_properties={"model_dir": str(trained.head_dir)})
    assert ts_handler.handle(None, context) is None
    first, second = _requests(trained.unseen.select([0, 1]))

    answers = ts_handler.handle([{"body": first}, {"data": json.dumps(second).encode()}], context)

    expected = trained.model.predict_proba(trained.unseen.select([0, 1]))
    np.testing.assert_allclose([answer["probabilities"] for answer in answers], expected, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ([1, 2], "expected a JSON object"),
        ({"audio": [[0.0] * BANDS]}, '"frames" needs at least one row of 1280 numbers'),
        ({"frames": [[0.0] * FRAME_DIM], "audio": []}, '"audio" needs at least one row of 8 numbers'),
        ({"frames": [[0.0] * 5], "audio": [[0.0] * BANDS]}, 'each "frames" row needs 1280 numbers; got shape [1, 5]'),
        ({"frames": [[0.0] * FRAME_DIM], "audio": [["loud"] * BANDS]}, '"audio" must be rows of numbers'),
        ({"frames": [[0.0] * FRAME_DIM], "audio": [[float("nan")] * BANDS]}, "not a finite number"),
    ],
)
def test_a_bad_request_is_a_bad_request_that_says_why(trained: Trained, request_body: object, message: str) -> None:
    service = ts_handler.load_service(trained.head_dir)
    with pytest.raises(ts_handler.BadRequest) as caught:
        service.answer([request_body])
    assert message in str(caught.value)


def test_a_frames_only_model_needs_no_audio(trained: Trained) -> None:
    service = ts_handler.load_service(trained.frames_only_dir)
    frames = trained.unseen.select([2])

    answer = service.answer([{"frames": frames.frames[0].tolist()}])[0]

    np.testing.assert_allclose(answer["probabilities"], trained.frames_only.predict_proba(frames)[0], atol=TOLERANCE)


# --- loading sequences from the store ------------------------------------------------------------------------------


def _media_table(frames_keys: list[str], audio_keys: list[str]) -> pa.Table:
    return pa.table({"frames_vectors_key": frames_keys, "audio_features_key": audio_keys})


def _unit_frames(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, FRAME_DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_only_videos_with_frames_and_audio_are_loaded_each_capped(store: LocalObjectStore) -> None:
    rng = np.random.default_rng(0)
    long_audio = rng.normal(size=(200, BANDS)).astype(np.float32)
    frames = [put_array(store, _unit_frames(rng, count), "frames").key for count in (3, 1, 2)]
    audio = [put_array(store, long_audio, "audio").key, put_array(store, np.zeros((0, BANDS)), "audio").key]
    table = _media_table([frames[0], "", frames[1], frames[2]], [audio[0], audio[0], audio[1], audio[0]])

    inputs = load_genre_inputs(store, table, max_steps=16)

    assert inputs.rows.tolist() == [0, 3]  # row 1 has no frames, row 2 a silent file
    assert [len(steps) for steps in inputs.frames] == [3, 2] and inputs.bands == BANDS
    np.testing.assert_array_equal(inputs.audio[0], long_audio[ts_handler.sample_steps(200, 16).numpy()])
    assert inputs.frames[0].dtype == np.float32


def test_a_missing_or_malformed_sequence_is_a_clear_error(store: LocalObjectStore) -> None:
    rng = np.random.default_rng(1)
    frames = put_array(store, _unit_frames(rng, 2), "frames").key
    audio = put_array(store, rng.normal(size=(4, BANDS)), "audio").key
    other_bands = put_array(store, rng.normal(size=(4, BANDS + 1)), "audio").key
    flat = put_array(store, np.ones(7), "audio").key
    narrow = put_array(store, np.ones((2, 100)), "frames").key

    with pytest.raises(NotFound, match="frames_vectors_key 'frames/gone.npy'"):
        load_genre_inputs(store, _media_table(["frames/gone.npy"], [audio]))
    with pytest.raises(
        InvalidInput, match=r"audio_features_key .* holds float32 \[7\]; expected float \[steps, bands\]"
    ):
        load_genre_inputs(store, _media_table([frames], [flat]))
    with pytest.raises(InvalidInput, match=r"expected float \[steps, 1280\]"):
        load_genre_inputs(store, _media_table([narrow], [audio]))
    with pytest.raises(InvalidInput, match="band count"):
        load_genre_inputs(store, _media_table([frames, frames], [audio, other_bands]))
    store.put("audio/text.npy", b"not numpy", content_type="application/x-npy")
    with pytest.raises(InvalidInput, match="not a .npy array"):
        load_genre_inputs(store, _media_table([frames], ["audio/text.npy"]))


# --- learning genre from real stand-in media -------------------------------------------------------------------------

CATALOGUE_SEED = 11
CHANNELS = 24  # three per category, so a held-out channel's genre is mostly seen in training through another one
VIDEOS_PER_CHANNEL = 3


@dataclass
class Media:
    store: LocalObjectStore
    table: pa.Table


def _frame_vectors(rng: np.random.Generator, centre: np.ndarray, count: int) -> np.ndarray:
    """One video's frames in its channel's look: the channel's centre, the video's own offset, each frame's jitter."""
    video = centre + 0.5 * rng.standard_normal(FRAME_DIM)
    vectors = video + 0.3 * rng.standard_normal((count, FRAME_DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _real_audio(catalogue: Catalogue, video: Video, workdir: Path) -> np.ndarray:
    """The preprocessor's log-mel features of the stand-in's MP4 for `video`, read from a file as it reads them."""
    path = workdir / f"{video.id}.mp4"
    path.write_bytes(media_mp4(catalogue.channel(video.channel_id), video))
    try:
        return audio_features(path, MP4, 64)
    finally:
        path.unlink()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    """Every video of a 24-channel catalogue with its sequences in a store, and the three splits over them."""
    catalogue = Catalogue.generate(
        CATALOGUE_SEED, CHANNELS, VIDEOS_PER_CHANNEL, now=NOW, media_fraction=1.0, upcoming_fraction=0.0
    )
    videos = sorted(catalogue.visible(NOW), key=lambda video: video.id)
    store = LocalObjectStore(tmp_path_factory.mktemp("objects"), "genre")
    store.ensure_bucket()
    rng = np.random.default_rng(CATALOGUE_SEED)
    centres = {channel.id: rng.standard_normal(FRAME_DIM) for channel in catalogue.channels}
    frames_keys, audio_keys = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for video in videos:
            audio = _real_audio(catalogue, video, Path(workdir))
            # The preprocessor samples one frame a second and drops the one-second title and end slates.
            frames = _frame_vectors(rng, centres[video.channel_id], max(1, len(audio) - 2))
            audio_keys.append(put_array(store, audio, "audio/logmel").key)
            frames_keys.append(put_array(store, frames, "embeddings/frames").key)
    channels = [video.channel_id for video in videos]
    groups = np.arange(len(videos))
    published = np.array([int(video.published_at.timestamp() * 1e6) for video in videos])
    table = pa.table(
        {
            "video_id": [video.id for video in videos],
            "channel": channels,
            "genre": [video.category_id for video in videos],
            "frames_vectors_key": frames_keys,
            "audio_features_key": audio_keys,
            "split_random": random_split(groups, seed=0),
            "split_channel": channel_split(channels, groups, seed=0),
            "split_time": time_split(published, groups),
        }
    )
    return Media(store, table)


@pytest.fixture(scope="module")
def held_out(media: Media) -> ev.TaskReport:
    return ev.evaluate_task(media.table, ev.GENRE, "split_channel", store=media.store, seed=0, resamples=300)


def test_the_two_stream_model_names_genres_of_channels_it_never_saw(held_out: ev.TaskReport) -> None:
    print("\n" + _text(held_out))  # the table, for the record: pytest -s shows it
    assert [(result.name, result.role) for result in held_out.results] == [
        (TWO_STREAM, ev.MODEL),
        (FRAMES_ONLY, ev.MODEL),
        (AUDIO_ONLY, ev.MODEL),
        (MAJORITY, ev.BASELINE),
    ]
    two_stream, majority = held_out.result(TWO_STREAM).metrics, held_out.result(MAJORITY).metrics
    assert held_out.rows["test"] >= 8
    assert two_stream.accuracy >= majority.accuracy + 0.3
    assert two_stream.macro_f1 > majority.macro_f1_ci.high
    assert two_stream.gap > majority.gap + 0.3


def test_on_held_out_channels_sound_carries_genre_and_pictures_do_not(held_out: ev.TaskReport) -> None:
    audio, frames = held_out.result(AUDIO_ONLY).metrics, held_out.result(FRAMES_ONLY).metrics
    assert audio.accuracy >= frames.accuracy + 0.3
    assert audio.gap > frames.gap


def test_the_genre_table_shows_gap_beside_top_3(held_out: ev.TaskReport) -> None:
    text = _text(held_out)
    assert "genre · held-out channels" in text and "GAP@20" in text and "top-3" in text
    assert held_out.result(TWO_STREAM).metrics.top_k == 3
    document = held_out.to_dict()
    assert document["train_config"]["stream_dropout"] == GenreTrainConfig().stream_dropout
    assert document["results"][0]["metrics"]["gap_k"] == 20


def test_genre_is_skipped_with_its_reason_without_a_store_or_enough_media(media: Media) -> None:
    without_store = ev.evaluate_task(media.table, ev.GENRE, "split_channel")
    assert without_store.skipped == ev.NO_STORE and without_store.results == []

    no_media = media.table.set_column(
        media.table.schema.get_field_index("audio_features_key"),
        "audio_features_key",
        pa.array([""] * len(media.table)),
    )
    skipped = ev.evaluate_task(no_media, ev.GENRE, "split_random", store=media.store)
    assert skipped.skipped == "skipped: no train or val or test videos with frames and audio in split_random"
    assert skipped.rows == {"train": 0, "val": 0, "test": 0}
    assert "no train or val or test videos with frames and audio" in _text(skipped)


def _text(report: ev.TaskReport) -> str:
    buffer = io.StringIO()
    ev.render_task(report, Console(file=buffer, width=160, color_system=None, force_terminal=False))
    return buffer.getvalue()


def test_the_stand_in_media_are_real_log_mel_sequences(media: Media) -> None:
    inputs = load_genre_inputs(media.store, media.table)
    assert len(inputs) == len(media.table) and inputs.bands == 64
    assert min(len(steps) for steps in inputs.audio) >= 6  # 6 to 10 second files
    assert all(np.isfinite(steps).all() for steps in inputs.audio)
