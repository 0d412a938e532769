"""RIFE 4.6: the real network with random weights, loaded through the real hub loader offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stillmotion.config import RIFE_REPO_ID
from stillmotion.errors import ModelUnavailable
from stillmotion.models.rife import IFNet, parameter_count
from stillmotion.models.rife_loader import RIFE_FILENAME, RifeWeights, load_rife
from tests.interpolation.helpers import FAKE_COMMIT, save_rife_in_hub_cache


def test_the_network_has_the_published_4_6_parameter_names_and_count() -> None:
    net = IFNet()
    names = list(net.state_dict())
    # The first and last keys of the published rife46.pth checkpoints.
    assert names[0] == "block0.conv0.0.0.weight" and names[-1] == "block3.lastconv.0.bias"
    assert "block2.convblock.7.beta" in names
    assert sum(p.numel() for p in net.parameters()) == parameter_count() == 5_306_256


def test_loads_from_the_hub_cache_offline_with_the_commit_recorded(tmp_path: Path) -> None:
    saved = save_rife_in_hub_cache(tmp_path, seed=3)
    loaded = load_rife(RifeWeights(), cache_dir=tmp_path, offline=True)
    assert loaded.commit == FAKE_COMMIT and loaded.path.name == RIFE_FILENAME
    assert all(torch.equal(loaded.net.state_dict()[k], v) for k, v in saved.items())
    assert loaded.to_dict()["repo_id"] == RIFE_REPO_ID and loaded.to_dict()["commit"] == FAKE_COMMIT


def test_loads_practical_rifes_own_checkpoints_and_a_pinned_revision(tmp_path: Path) -> None:
    saved = save_rife_in_hub_cache(tmp_path, seed=4, prefix="module.")
    loaded = load_rife(RifeWeights(revision=FAKE_COMMIT), cache_dir=tmp_path, offline=True)
    assert torch.equal(loaded.net.state_dict()["block1.lastconv.0.weight"], saved["block1.lastconv.0.weight"])


def test_missing_weights_name_the_repo_and_the_way_on(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        load_rife(RifeWeights(), cache_dir=tmp_path, offline=True)
    assert RIFE_REPO_ID in info.value.message and "minterpolate" in info.value.message
    assert info.value.field == "interpolator"


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    save_rife_in_hub_cache(tmp_path)
    snapshot = tmp_path / f"models--{RIFE_REPO_ID.replace('/', '--')}" / "snapshots" / FAKE_COMMIT
    torch.save({"block0.conv0.0.0.weight": torch.zeros(3, 3)}, snapshot / RIFE_FILENAME)
    with pytest.raises(ModelUnavailable, match="not RIFE 4.6 weights"):
        load_rife(RifeWeights(), cache_dir=tmp_path, offline=True)


def test_a_still_pair_stays_still_whatever_the_weights() -> None:
    """Warping a uniform image anywhere gives the same image: the output must equal the input."""
    torch.manual_seed(0)
    net = IFNet().eval()
    frame = torch.full((2, 3, 64, 128), 0.3)
    with torch.inference_mode():
        out = net(frame, frame, torch.tensor([0.25, 0.75]))
        odd = net(frame[..., :40, :72], frame[..., :40, :72], 0.5)  # padded to 64 inside, cropped back
    np.testing.assert_allclose(out.numpy(), frame.numpy(), atol=1e-5)
    assert odd.shape == (2, 3, 40, 72)
