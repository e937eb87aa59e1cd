"""Stage 3: the registry, loading paths, pooling and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from alignnb.extract import encoders, spaces
from alignnb.extract import models
from alignnb.extract.embeddings import Embeddings, check_same_sentences
from alignnb.extract.models import ModelSpec, ModelUnavailable
from support import ENCODER_SENTENCES as SENTENCES
from support import tiny, word_tokenizer

FAMILIES = {"llama": ("mean", "last"), "qwen2": ("mean", "last"), "gemma3": ("mean", "last"),
            "bert": ("mean", "cls", "last"), "clip": ("proj", "mean", "last"), "blip": ("proj", "cls", "mean")}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import torch

    out = {}
    for kind in FAMILIES:
        torch.manual_seed(0)
        model, tok_kind, arch = tiny(kind)
        folder = tmp_path_factory.mktemp(kind)
        model.save_pretrained(folder)
        word_tokenizer(tok_kind).save_pretrained(folder)
        out[kind] = ModelSpec(f"tiny-{kind}", "decoder LLM" if tok_kind == "decoder" else "encoder LM", "hf",
                              str(folder), arch=arch, pooling=FAMILIES[kind][0],
                              skip_bos_in_mean=tok_kind == "decoder")
    return out


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_tiny_model_loads_and_padding_does_not_change_embeddings(kind, tiny_models):
    spec = tiny_models[kind]
    for pooling in FAMILIES[kind]:
        batched = encoders.embed_hf(spec, SENTENCES, pooling, "last", batch_size=8, progress=False)
        alone = np.stack([encoders.embed_hf(spec, [s], pooling, "last", progress=False)[0] for s in SENTENCES])
        assert batched.shape[0] == len(SENTENCES) and np.isfinite(batched).all()
        np.testing.assert_allclose(batched, alone, atol=1e-5, err_msg=f"{kind} {pooling}")
        assert not np.allclose(batched[0], batched[1])  # sentences differ
    if "proj" not in FAMILIES[kind][:1]:
        layers = encoders.embed_hf(spec, SENTENCES, FAMILIES[kind][0], "all", progress=False)
        assert layers.shape[0] == 3  # embeddings + 2 layers
        np.testing.assert_allclose(layers[-1], encoders.embed_hf(spec, SENTENCES, FAMILIES[kind][0], "last",
                                                                 progress=False), atol=1e-6)


def test_pooling_definitions():
    import torch

    h = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(encoders.pool(h, mask, "mean")[0], h[0, :2].mean(0))
    torch.testing.assert_close(encoders.pool(h, mask, "mean", skip_first=True)[0], h[0, 1])
    torch.testing.assert_close(encoders.pool(h, mask, "last"), torch.stack([h[0, 1], h[1, 2]]))
    torch.testing.assert_close(encoders.pool(h, mask, "cls"), h[:, 0])
    with pytest.raises(ValueError, match="not a token pooling"):
        encoders.pool(h, mask, "proj")


def test_cache_hits_and_misses(tiny_models, tmp_path, monkeypatch):
    spec = tiny_models["llama"]
    calls = []
    real = encoders.embed_hf
    monkeypatch.setattr(encoders, "embed_hf", lambda *a, **k: calls.append(a[2:4]) or real(*a, **k))
    e1 = encoders.embed(spec, SENTENCES, data_dir=tmp_path, progress=False)
    e2 = encoders.embed(spec, SENTENCES, data_dir=tmp_path, progress=False)
    assert len(calls) == 1 and np.array_equal(e1.vectors, e2.vectors) and e2.sentences == SENTENCES
    encoders.embed(spec, SENTENCES, pooling="last", data_dir=tmp_path, progress=False)  # pooling
    encoders.embed(spec, SENTENCES, layer=1, data_dir=tmp_path, progress=False)  # layer
    encoders.embed(spec, SENTENCES[::-1], data_dir=tmp_path, progress=False)  # sentence order
    encoders.embed(spec, SENTENCES, data_dir=tmp_path, force=True, progress=False)  # forced
    assert len(calls) == 5
    # new weights (another file size) -> another weight identity -> miss
    from pathlib import Path

    (Path(spec.location) / "extra.json").write_text("{}")
    encoders.embed(spec, SENTENCES, data_dir=tmp_path, progress=False)
    assert len(calls) == 6
    (Path(spec.location) / "extra.json").unlink()
    with pytest.raises(FileNotFoundError, match="03_extract_embeddings"):
        encoders.embed(spec, ["a new sentence"], data_dir=tmp_path, must_exist=True, progress=False)
    assert not list(tmp_path.glob("embeddings/.*tmp"))


def test_registry_and_unavailable_models(tmp_path):
    assert set(models.profile_models("offline")) <= set(models.REGISTRY)
    with pytest.raises(KeyError, match="smollm2-135m"):
        models.get_spec("smollm2-135")
    with pytest.raises(ValueError, match="already registered"):
        models.register_model(models.get_spec("agent"))
    assert models.family_of("minilm-l6") == "sentence encoder" and models.family_of("not-a-model") == "other"
    assert models.language_models(["agent", "minilm-l6", "bag-of-attributes", "smollm2-135m"]) == [
        "minilm-l6", "smollm2-135m"]
    with pytest.raises(ValueError, match="family"):
        ModelSpec("x", "robot", "hf")
    hub = models.get_spec("bert-base")  # no network here: reported, not substituted
    done, layers, skipped = spaces.study_embeddings(["bag-of-attributes", "bert-base"], SENTENCES,
                                                      data_dir=tmp_path, progress=False)
    assert list(done) == ["bag-of-attributes"] and "bert-base" in skipped and "hub" in skipped["bert-base"]
    assert hub.paper_family == "BERT"
    missing = ModelSpec("nowhere", "decoder LLM", "gguf", "no_such_package_xyz:model.gguf")
    with pytest.raises(ModelUnavailable, match="not installed"):
        encoders.embed(missing, SENTENCES, data_dir=tmp_path)
    with pytest.raises(ValueError, match="pooling must be one of"):
        encoders.embed("bag-of-attributes", SENTENCES, pooling="garbage", data_dir=tmp_path)


def test_embeddings_round_trip_and_sentence_checks(tmp_path):
    e = Embeddings("m", SENTENCES, np.ones((5, 3), np.float32), {"a": 1})
    e.save(tmp_path / "e.npz")
    f = Embeddings.load(tmp_path / "e.npz")
    assert f.sentences == SENTENCES and f.meta == {"a": 1} and np.array_equal(f.vectors, e.vectors)
    with pytest.raises(ValueError, match="differ at sentence 0"):
        check_same_sentences(e, Embeddings("n", SENTENCES[::-1], e.vectors))
    with pytest.raises(ValueError, match="5 sentences"):
        check_same_sentences(e, Embeddings("n", SENTENCES[:4], e.vectors[:4]))
    with pytest.raises(ValueError, match="vectors for"):
        Embeddings("m", SENTENCES, np.ones((4, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("key,dim", [("minilm-l6", 384), ("smollm2-135m", 576)])
def test_real_offline_models(key, dim, data_root):
    try:
        e = encoders.embed(key, SENTENCES, data_dir=data_root, progress=False)
    except ModelUnavailable as exc:  # pragma: no cover - make test installs the packs
        pytest.fail(f"offline model pack missing: {exc}")
    assert e.vectors.shape == (len(SENTENCES), dim) and np.isfinite(e.vectors).all()
    sim = e.vectors @ e.vectors.T / np.outer(*(2 * [np.linalg.norm(e.vectors, axis=1)]))
    assert sim[0, 4] > sim[0, 2]  # "go to the red ball" is nearer "go to a ball" than the put-next sentence


def test_adhoc_model_reference_is_the_same_model(tiny_models, tmp_path):
    spec = tiny_models["bert"]
    ref = f"encoder:{spec.location}"
    adhoc = models.get_spec(ref)
    assert adhoc.family == "encoder LM" and adhoc.location == spec.location and adhoc.pooling == "mean"
    e = encoders.embed(ref, SENTENCES, data_dir=tmp_path, progress=False)
    assert e.model == ref
    np.testing.assert_allclose(e.vectors, encoders.embed_hf(spec, SENTENCES, "mean", "last", progress=False), atol=1e-6)
    (path,) = (tmp_path / "embeddings").glob("*.npz")
    assert "/" not in path.name.removesuffix(".npz") and ":" not in path.name
    assert models.get_spec(f"clip:{spec.location}").arch == "clip"
    with pytest.raises(KeyError, match="kind one of"):
        models.adhoc_spec("robot:x")


def test_lexical_controls_and_quantized_weights(tiny_models, tmp_path):
    from dataclasses import replace

    from alignnb.extract import controls

    bow = encoders.embed("bag-of-words", SENTENCES, data_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(bow.vectors, controls.bag_of_words(SENTENCES)[0])
    tf = encoders.embed("tf-idf", SENTENCES, data_dir=tmp_path, progress=False)
    np.testing.assert_allclose(np.linalg.norm(tf.vectors, axis=1), 1, rtol=1e-6)
    assert models.get_spec("minilm-l6").family == "sentence encoder"  # not BERT itself
    assert models.get_spec("minilm-l6-q4_0").quantize == "q4_0"
    # Q4_0 rounding of a full-precision model: another cache entry, close but not equal vectors
    spec = tiny_models["bert"]
    full = encoders.embed(spec, SENTENCES, data_dir=tmp_path, progress=False)
    rounded = encoders.embed(replace(spec, key="tiny-bert-q4", quantize="q4_0"), SENTENCES, data_dir=tmp_path,
                             progress=False)
    assert not np.array_equal(full.vectors, rounded.vectors)
    cos = (full.vectors * rounded.vectors).sum(1) / np.linalg.norm(full.vectors, axis=1) / np.linalg.norm(
        rounded.vectors, axis=1)
    assert (cos > 0.9).all()
    with pytest.raises(ValueError, match="quantize must be one of"):
        replace(spec, quantize="q2")
