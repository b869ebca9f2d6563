"""The backbone: real ImageNet weights, the ONNX export and its check, both runtimes, and the micro-batcher on top.

Real photos from scikit-image prove what no synthetic picture can: the weights are ImageNet-trained, loaded into
the right layers, fed the preprocessing they were trained with, and read with the right class names. The model is
exported once for the whole session.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

from tubelens.embedding.batching import MicroBatcher
from tubelens.embedding.concepts import top_concepts
from tubelens.errors import InvalidInput
from tubelens.modelkit import backbone as backbone_module
from tubelens.modelkit.backbone import Backbone
from tubelens.modelkit.efficientnet import (
    EfficientNetLite0,
    load_pretrained,
    model_spec,
    rename_by_position,
    weights_path,
)
from tubelens.modelkit.export import VERSION_KEY, ExportMismatch, ExportReport, default_onnx_path, export_onnx
from tubelens.modelkit.preprocess import to_batch

DOMESTIC_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
STRIPED_CATS = {281, 282, 285}  # what Chelsea, a striped tabby, may be called
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504


@pytest.fixture(scope="session")
def torch_backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return Backbone(tmp_path_factory.mktemp("empty") / "absent.onnx", export_if_missing=False)


def top5(backbone: Backbone, image: Image.Image) -> list[int]:
    return [concept.class_index for concept in top_concepts(backbone.embed([image]).probabilities)[0]]


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def altered_copy(image: Image.Image) -> bytes:
    """The same picture as a re-upload might have it: 60 % size, 5 % cropped off each edge, JPEG quality 60."""
    small = image.resize((image.width * 6 // 10, image.height * 6 // 10), Image.Resampling.BILINEAR)
    margin_x, margin_y = small.width // 20, small.height // 20
    return jpeg(small.crop((margin_x, margin_y, small.width - margin_x, small.height - margin_y)), quality=60)


# ImageNet sanity


def test_a_photo_of_a_cat_is_a_cat(backbone: Backbone, photos: dict[str, Image.Image]) -> None:
    best = top5(backbone, photos["chelsea"])
    assert best[0] in DOMESTIC_CATS
    assert STRIPED_CATS & set(best)


def test_a_photo_of_an_espresso_is_an_espresso(backbone: Backbone, photos: dict[str, Image.Image]) -> None:
    best = top5(backbone, photos["coffee"])
    assert best[0] == ESPRESSO
    assert {CUP, COFFEE_MUG} & set(best)


@pytest.mark.parametrize("name", ["astronaut", "rocket"])
def test_photos_without_a_cat_are_not_cats(backbone: Backbone, photos: dict[str, Image.Image], name: str) -> None:
    assert not DOMESTIC_CATS & set(top5(backbone, photos[name]))


def test_concepts_carry_the_names_of_the_classes_the_weights_predict(
    backbone: Backbone, photos: dict[str, Image.Image]
) -> None:
    [espresso, *_] = top_concepts(backbone.embed([photos["coffee"]]).probabilities)[0]
    assert (espresso.class_index, espresso.label) == (ESPRESSO, "espresso")
    assert espresso.score > 0.5


# ONNX export


def test_the_export_agrees_with_torch_on_real_photos(exported: ExportReport, photos: dict[str, Image.Image]) -> None:
    batch = to_batch(list(photos.values()))
    with torch.inference_mode():
        expected = [output.numpy() for output in load_pretrained()(torch.from_numpy(batch))]
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    actual = session.run(["embedding", "logits"], {"images": batch})

    assert [a.shape for a in actual] == [(4, 1280), (4, 1000)]
    assert max(float(np.abs(a - e).max()) for a, e in zip(actual, expected, strict=True)) <= 1e-4
    assert exported.check_images == 4
    assert max(exported.max_abs_diff_embedding, exported.max_abs_diff_logits) <= 1e-4


def test_the_export_is_stamped_with_the_weights_version(exported: ExportReport) -> None:
    digest = hashlib.sha256(weights_path().read_bytes()).hexdigest()
    stamped = {prop.key: prop.value for prop in onnx.load(str(exported.path)).metadata_props}

    assert (exported.model, exported.version) == ("efficientnet_lite0", digest[:12])
    assert stamped[VERSION_KEY] == digest[:12]
    assert (model_spec().name, model_spec().version) == ("efficientnet_lite0", digest[:12])
    assert default_onnx_path() == Path(".tubelens/models") / f"efficientnet_lite0-{digest[:12]}.onnx"


def test_an_export_that_disagrees_with_torch_fails_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ExportMismatch, match="over the tolerance"):
        export_onnx(tmp_path / "backbone.onnx", tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_the_module_entry_point_exports_and_prints_its_report(tmp_path: Path) -> None:
    target = tmp_path / "models" / "backbone.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "tubelens.modelkit.export", str(target)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["path"] == str(target) and target.is_file()
    assert report["max_abs_diff_logits"] <= 1e-4


# Runtimes


def test_onnxruntime_serves_and_torch_is_the_fallback(backbone: Backbone, torch_backbone: Backbone) -> None:
    assert (backbone.runtime, torch_backbone.runtime) == ("onnxruntime", "torch")
    assert backbone.model == torch_backbone.model == model_spec()


def test_both_runtimes_give_the_same_answers(
    backbone: Backbone, torch_backbone: Backbone, photos: dict[str, Image.Image]
) -> None:
    images = list(photos.values())
    fast, slow = backbone.embed(images), torch_backbone.embed(images)

    assert fast.probabilities.argmax(axis=1).tolist() == slow.probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose(fast.vectors, slow.vectors, atol=1e-5)


def test_a_missing_model_is_exported_once_on_first_start(
    exported: ExportReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = []

    def export_by_copying(path: Path) -> ExportReport:
        exports.append(path)
        path.parent.mkdir(parents=True)
        path.write_bytes(exported.path.read_bytes())
        return exported

    monkeypatch.setattr(backbone_module, "export_onnx", export_by_copying)
    target = tmp_path / "models" / "backbone.onnx"
    first, second = Backbone(target), Backbone(target)

    assert exports == [target]
    assert first.runtime == second.runtime == "onnxruntime"


def stale_export(exported: ExportReport, path: Path) -> None:
    graph = onnx.load(str(exported.path))
    onnx.helper.set_model_props(graph, {VERSION_KEY: "000000000000"})
    onnx.save(graph, str(path))


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda exported, path: path.write_bytes(b"not a model"), id="unloadable"),
        pytest.param(stale_export, id="other-weights"),
    ],
)
def test_a_model_file_that_cannot_serve_falls_back_to_torch(exported: ExportReport, tmp_path: Path, write) -> None:
    path = tmp_path / "backbone.onnx"
    write(exported, path)
    assert Backbone(path).runtime == "torch"


def test_weights_that_do_not_fit_the_network_are_refused() -> None:
    target = EfficientNetLite0().state_dict()
    checkpoint = dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    checkpoint["_conv_head.weight"] = torch.zeros(1280, 321, 1, 1)

    with pytest.raises(RuntimeError, match=r"\(_conv_head.weight\) has shape \(1280, 321, 1, 1\)"):
        rename_by_position(checkpoint, target)
    with pytest.raises(RuntimeError, match="has 295 tensors"):
        rename_by_position(dict(list(checkpoint.items())[:-1]), target)


# Embeddings


def test_embeddings_are_unit_vectors(backbone: Backbone, photos: dict[str, Image.Image]) -> None:
    result = backbone.embed(list(photos.values()))

    assert result.vectors.shape == (4, 1280) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_an_altered_copy_is_much_closer_than_another_photo(backbone: Backbone, photos: dict[str, Image.Image]) -> None:
    names = list(photos)
    originals = backbone.embed(list(photos.values())).vectors
    copies = backbone.embed([altered_copy(image) for image in photos.values()]).vectors
    similarity = copies @ originals.T

    for row, name in enumerate(names):
        others = np.delete(similarity[row], row)
        assert similarity[row, row] > 0.7, name
        assert similarity[row, row] - others.max() > 0.4, name


def test_undecodable_bytes_are_invalid_input_naming_the_image(
    backbone: Backbone, photos: dict[str, Image.Image]
) -> None:
    with pytest.raises(InvalidInput, match=r"^image 1: ") as raised:
        backbone.embed([jpeg(photos["chelsea"]), b"<html>not found</html>"])
    assert raised.value.field == "images[1]"


# Micro-batching over the real backbone


def test_concurrent_callers_get_their_own_rows_from_shared_batches(
    backbone: Backbone, photos: dict[str, Image.Image]
) -> None:
    images = [jpeg(photo) for photo in photos.values()] + [altered_copy(photo) for photo in photos.values()]
    requests = [images[n % 8 : n % 8 + 1 + n % 3] for n in range(24)]
    alone = [backbone.embed(request) for request in requests]
    calls = []

    def counted(batch: np.ndarray):
        calls.append(len(batch))
        return backbone.infer(batch)

    results: dict[int, object] = {}
    start = threading.Barrier(len(requests))
    with MicroBatcher(counted, max_images=32, window_s=0.05) as batcher:

        def call(n: int) -> None:
            start.wait()
            results[n] = batcher.embed(requests[n])

        threads = [threading.Thread(target=call, args=(n,)) for n in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sum(calls) == sum(len(request) for request in requests)
    assert len(calls) < len(requests)
    for n, expected in enumerate(alone):
        np.testing.assert_allclose(results[n].vectors, expected.vectors, atol=1e-5)
        np.testing.assert_allclose(results[n].probabilities, expected.probabilities, atol=1e-5)


def test_a_bad_image_fails_only_its_own_request(backbone: Backbone, photos: dict[str, Image.Image]) -> None:
    good = [[jpeg(photos["chelsea"])], [jpeg(photos["coffee"]), jpeg(photos["rocket"])]]
    bad = [jpeg(photos["astronaut"]), jpeg(photos["astronaut"])[:500]]
    outcomes: dict[str, object] = {}
    start = threading.Barrier(3)

    with MicroBatcher(backbone.infer, window_s=0.05) as batcher:

        def call(key: str, images: list[bytes]) -> None:
            start.wait()
            try:
                outcomes[key] = batcher.embed(images)
            except InvalidInput as exc:
                outcomes[key] = exc

        threads = [
            threading.Thread(target=call, args=(key, images))
            for key, images in (("cat", good[0]), ("coffee+rocket", good[1]), ("bad", bad))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert isinstance(outcomes["bad"], InvalidInput) and outcomes["bad"].field == "images[1]"
    assert outcomes["cat"].probabilities.argmax(axis=1).tolist()[0] in DOMESTIC_CATS
    assert outcomes["coffee+rocket"].probabilities.argmax(axis=1).tolist()[0] == ESPRESSO
