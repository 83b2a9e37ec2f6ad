"""Feature extractors for Fréchet distances: VQ encoder, DINOv2 (transformers, local folder), FID Inception."""

from __future__ import annotations

import sys

import pytest
import torch

import vavam
from vavam.eval.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DinoV2Features,
    FeatureExtractor,
    InceptionFeatures,
    VQEncoderFeatures,
    build_extractor,
    check_unit_images,
)
from vavam.eval.inception import FIDInceptionV3, _avg_pool_3x3, load_fid_inception, load_fid_inception_state_dict

# ------------------------------------------------------------------------------ input checks + VQ encoder


def test_check_unit_images_messages():
    check_unit_images(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        check_unit_images(torch.rand(2, 3, 4, 4) * 2 - 1)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        check_unit_images(torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="float"):
        check_unit_images(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="finite|NaN|nan"):
        check_unit_images(torch.full((1, 3, 4, 4), float("nan")))


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return vavam.build_model(vavam.presets.vq_tiny()).eval()


def test_vq_encoder_features_are_pooled_encoder_output(tok):
    ext = VQEncoderFeatures(tok)
    assert isinstance(ext, FeatureExtractor)
    assert ext.comparable_to_published is False and "not comparable to published FID" in ext.description
    images = torch.rand(3, 3, 32, 48)
    feats = ext(images)
    z = tok.encoder(images * 2 - 1).flatten(2)  # [3, 64, 4*6]
    assert feats.shape == (3, ext.dim) == (3, 2 * tok.config.z_channels)
    torch.testing.assert_close(feats[:, : ext.dim // 2], z.mean(-1))
    torch.testing.assert_close(feats[:, ext.dim // 2 :], z.std(-1, unbiased=False))
    with pytest.raises(ValueError, match="multiple of the tokenizer's downsampling factor 8"):
        ext(torch.rand(1, 3, 30, 48))
    with pytest.raises(TypeError, match="encoder"):
        VQEncoderFeatures(object())


def test_build_extractor_errors(tok, tmp_path):
    assert isinstance(build_extractor("vq", tokenizer=tok), VQEncoderFeatures)
    with pytest.raises(ValueError, match="needs --weights"):
        build_extractor("dinov2")
    with pytest.raises(ValueError, match="pt_inception"):
        build_extractor("inception")
    with pytest.raises(ValueError, match="unknown extractor"):
        build_extractor("clip")


# ------------------------------------------------------------------------------ FID Inception-v3


def test_fid_inception_structure():
    model = FIDInceptionV3().eval()
    # torchvision documents 27,161,264 parameters for inception_v3 (1000 classes, aux classifier). The FID graph
    # drops the aux classifier (768*128+2*128 + 128*768*25+2*768 + 768*1000+1000 = 3,326,696) and has 1008
    # classes (+8 * 2048 + 8): 23,850,960.
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    assert [m.max_pool for m in (model.Mixed_7b, model.Mixed_7c)] == [False, True]
    # the TF average pool ignores padding: a constant map stays constant at the borders
    ones = torch.ones(1, 2, 5, 5)
    torch.testing.assert_close(_avg_pool_3x3(ones), ones)
    # preprocessing: bilinear resize to 299 (align_corners=False), then 2 x - 1
    x = torch.rand(1, 3, 40, 56)
    pre = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model.preprocess(x), 2 * pre - 1)
    torch.testing.assert_close(model.preprocess(pre), 2 * pre - 1)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    torch.manual_seed(1)
    model = FIDInceptionV3()
    with torch.no_grad():  # non-trivial batch-norm statistics, so a lost buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("inception")
    path = folder / "pt_inception-2015-12-05-test.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


@pytest.mark.slow
def test_fid_inception_weights_round_trip(inception_file):
    model, path = inception_file
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
    assert expected.shape == (1, 2048)
    loaded = load_fid_inception(path)  # the file: strict load through the restricted unpickler
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    ext = InceptionFeatures.from_local(path.parent)  # the folder holding pt_inception-2015-12-05-*.pth
    assert ext.dim == 2048 and ext.comparable_to_published
    torch.testing.assert_close(ext(x), expected, rtol=0, atol=0)


def test_fid_inception_key_errors(inception_file, tmp_path):
    model, _ = inception_file
    state = model.state_dict()
    # older files lack num_batches_tracked: still a strict load
    no_counter = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    load_fid_inception_state_dict(FIDInceptionV3(), no_counter)
    bad = dict(state)
    bad["Mixed_5b.extra.weight"] = bad.pop("Mixed_5b.branch1x1.conv.weight")
    with pytest.raises(ValueError, match=r"1 missing key.*Mixed_5b\.branch1x1\.conv\.weight.*1 unexpected key"):
        load_fid_inception_state_dict(FIDInceptionV3(), bad, source="bad.pth")
    wrong = dict(state)
    wrong["fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(ValueError, match=r"fc\.weight: file \(1000, 2048\) vs model \(1008, 2048\)"):
        load_fid_inception_state_dict(FIDInceptionV3(), wrong)
    with pytest.raises(FileNotFoundError, match=r"no such file.*pt_inception-2015-12-05-6726825d\.pth"):
        InceptionFeatures.from_local(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match=r"no pt_inception-2015-12-05-\*\.pth in this folder"):
        InceptionFeatures.from_local(tmp_path)


# ------------------------------------------------------------------------------ DINOv2 (transformers)

@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


def _tiny_dino():
    import transformers

    torch.manual_seed(0)
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=56, num_register_tokens=4,
    )
    return transformers.Dinov2WithRegistersModel(config).eval()


def test_dinov2_preprocessing_by_hand(transformers):
    ext = DinoV2Features(_tiny_dino())
    x = ext.preprocess(torch.full((1, 3, 32, 48), 0.5))
    assert x.shape == (1, 3, 280, 504)
    expected = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(expected))
    quirk = DinoV2Features(_tiny_dino(), signed_input_quirk=True).preprocess(torch.full((1, 3, 32, 48), 0.5))
    signed = [(0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]  # 0.5 -> 0 in [-1, 1]
    torch.testing.assert_close(quirk[0, :, 0, 0], torch.tensor(signed))
    with pytest.raises(ValueError, match="patch size 14"):
        DinoV2Features(_tiny_dino(), image_size=(280, 500))


def test_dinov2_from_local_matches_in_memory_model(transformers, tmp_path):
    model = _tiny_dino()
    model.save_pretrained(tmp_path / "dino")
    ext = DinoV2Features.from_local(tmp_path / "dino", image_size=(56, 98))
    assert ext.dim == 32 and not ext.comparable_to_published  # tiny random model: not the paper's ViT-L
    images = torch.rand(3, 3, 32, 48)
    pixels = DinoV2Features(model, image_size=(56, 98)).preprocess(images)
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state[:, 0]  # CLS after the final LayerNorm
    torch.testing.assert_close(ext(images), expected)


def test_dinov2_missing_weights_errors(transformers, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"no such folder.*config\.json.*model\.safetensors"):
        DinoV2Features.from_local(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'empty'}: config\.json is missing"):
        DinoV2Features.from_local(tmp_path / "empty")
    _tiny_dino().config.save_pretrained(tmp_path / "config_only")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        DinoV2Features.from_local(tmp_path / "config_only")
    _tiny_dino().save_pretrained(tmp_path / "ok")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'vavam\[eval\]'"):
        DinoV2Features.from_local(tmp_path / "ok")


def test_dinov2_rejects_other_models(transformers, tmp_path):
    config = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                     vocab_size=50)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="'bert' model, expected a DINOv2"):
        DinoV2Features.from_local(tmp_path / "bert")
