"""The pseudo-siamese network: structure, the change score, ROI pooling, the class head, its files."""

from __future__ import annotations

import json

import pytest
import torch

from changescope.errors import CorruptFileError, ParameterError, WeightsNotFoundError
from changescope.multimodal.config import ModelConfig
from changescope.multimodal.model import PseudoSiamese, load_model, model_paths, roi_cells, save_model

TINY = {"architecture": "test_resnet", "hidden_dim": 24, "proj_dim": 8, "context": 32, "roi": 8}


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return PseudoSiamese(ModelConfig(**(TINY | kw))).eval()


def _pair(n=3, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen), torch.randn(n, 1, size, size, generator=gen)


def test_published_structure_resnet34_separate_weights():
    model = PseudoSiamese()
    assert model.config.architecture == "resnet34"
    assert model.optical.features.conv1.in_channels == 3
    assert model.sar.features.conv1.in_channels == 1
    assert {id(p) for p in model.optical.parameters()}.isdisjoint({id(p) for p in model.sar.parameters()})
    linears = [m for m in model.optical_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 128)]
    assert model.class_head is None


def test_score_is_one_minus_cosine_of_unit_projections():
    model = _tiny()
    optical, sar = _pair()
    out = model(optical, sar)
    assert out.optical.shape == out.sar.shape == (3, 8)
    torch.testing.assert_close(out.optical.norm(dim=1), torch.ones(3))
    cos = torch.nn.functional.cosine_similarity(out.optical, out.sar, dim=1)
    torch.testing.assert_close(out.score, 1 - cos)
    assert ((out.score >= 0) & (out.score <= 2)).all()
    torch.testing.assert_close(model.change_score(optical, sar), out.score)


def test_roi_cells_and_roi_pooling():
    assert roi_cells(256, 16, 32) == slice(3, 5)
    assert roi_cells(64, 16, 32) == slice(0, 2)
    assert roi_cells(32, 8, 32) == slice(0, 1)
    optical, sar = _pair(size=128)
    roi_model, global_model = _tiny(pooling="roi", context=128), _tiny(pooling="global", context=128)
    roi_model.load_state_dict(global_model.state_dict())
    assert not torch.allclose(roi_model(optical, sar).score, global_model(optical, sar).score)
    whole = _tiny(pooling="roi", context=128, roi=128)
    whole.load_state_dict(global_model.state_dict())
    torch.testing.assert_close(whole(optical, sar).score, global_model(optical, sar).score)


def test_class_head_gives_logits():
    model = _tiny(n_classes=4)
    out = model(*_pair(n=2))
    assert out.logits is not None and out.logits.shape == (2, 4)


@pytest.mark.parametrize(
    ("optical", "sar", "match"),
    [
        (torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), "SAR image given as optical"),
        (torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32), "sar has shape"),
        (torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 64, 64), "same batch size and window size"),
        (torch.zeros(3, 32, 32), torch.zeros(1, 32, 32), "optical has shape"),
    ],
)
def test_bad_inputs(optical, sar, match):
    with pytest.raises(ParameterError, match=match):
        _tiny()(optical, sar)


def test_save_and_load_round_trip(tmp_path):
    model = _tiny(seed=4, n_classes=4)
    path = save_model(model, tmp_path / "m", extra={"epoch": 3})
    weights, sidecar = model_paths(path)
    assert weights == tmp_path / "m.safetensors" and sidecar.is_file()
    header = json.loads(sidecar.read_text())
    assert header["model"]["architecture"] == "test_resnet" and header["extra"] == {"epoch": 3}
    loaded, meta = load_model(sidecar)
    assert meta["extra"]["epoch"] == 3 and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    optical, sar = _pair()
    torch.testing.assert_close(loaded(optical, sar).score, model(optical, sar).score, rtol=0, atol=0)
    sidecar.unlink()  # the header inside the safetensors file is enough
    assert load_model(weights)[1]["model"] == header["model"]


def test_load_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing")
    path = save_model(_tiny(), tmp_path / "m")
    sidecar = model_paths(path)[1]
    sidecar.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CorruptFileError, match="not a changescope pseudo-siamese"):
        load_model(path)
    header = json.loads(json.dumps({"format": "changescope.multimodal.pseudo_siamese", "format_version": 1}))
    header["model"] = ModelConfig(**(TINY | {"proj_dim": 4})).model_dump()
    sidecar.write_text(json.dumps(header))
    with pytest.raises(CorruptFileError, match="does not hold the model"):
        load_model(path)
    with pytest.raises(ParameterError, match="not JSON"):
        save_model(_tiny(), tmp_path / "x", extra={"bad": object()})


@pytest.mark.parametrize(("stage", "stride"), [(2, 8), (3, 16), (4, 32)])
def test_stage_pools_that_stages_roi_cells(stage, stride):
    model = _tiny(pooling="roi", context=64, roi=16, stage=stage)
    assert model.optical.stride == model.sar.stride == stride
    optical, sar = _pair(size=64)
    cells = roi_cells(64, 16, stride)
    fmap = model.optical.features(optical)[-1]
    assert fmap.shape[-1] == 64 // stride
    pooled = fmap[:, :, cells, cells].mean(dim=(2, 3))
    z = torch.nn.functional.normalize(model.optical_head(pooled), dim=1)
    torch.testing.assert_close(model(optical, sar).optical, z)


def test_stage_is_saved_and_older_files_load_at_the_last_stage(tmp_path):
    model = _tiny(seed=2, stage=3, pooling="roi")
    _, sidecar = model_paths(save_model(model, tmp_path / "m"))
    loaded, meta = load_model(sidecar)
    assert meta["model"]["stage"] == 3 and loaded.optical.stride == 16
    optical, sar = _pair()
    torch.testing.assert_close(loaded(optical, sar).score, model(optical, sar).score, rtol=0, atol=0)
    last = _tiny(seed=2)
    _, sidecar = model_paths(save_model(last, tmp_path / "old"))
    header = json.loads(sidecar.read_text())
    del header["model"]["stage"]  # written before the field existed
    sidecar.write_text(json.dumps(header))
    assert load_model(sidecar)[0].config.stage == 4


def test_stage_out_of_range_is_refused():
    with pytest.raises(ValueError, match="stage"):
        ModelConfig(stage=5)
