"""RIFE 4.6: the real network with random weights, loaded through the real hub loader offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stillmotion.config import RIFE_REPO_ID
from stillmotion.engine.interpolate import Interpolators
from stillmotion.engine.progress import CancelToken
from stillmotion.errors import ModelUnavailable
from stillmotion.media.interpolation import Interpolator
from stillmotion.memory.interpolation import InterpolationPlan
from stillmotion.models.rife import IFNet, parameter_count
from stillmotion.models.rife_loader import RIFE_FILENAME, RifeWeights, load_rife
from tests.interpolation.helpers import FAKE_COMMIT, moving_square, save_rife_in_hub_cache


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


def test_loads_later_practical_rife_files_with_extra_keys_as_the_reference_loader_does(
    tmp_path: Path,
) -> None:
    """Practical-RIFE's loader strips ``module.`` and loads what IFNet has, ignoring the rest (``teacher.*``,
    ``caltime.*`` of later releases)."""
    extra = {"teacher.block0.conv0.0.0.weight": torch.ones(3, 3), "caltime.0.weight": torch.zeros(2)}
    saved = save_rife_in_hub_cache(tmp_path, seed=5, prefix="module.", extra=extra)
    loaded = load_rife(RifeWeights(), cache_dir=tmp_path, offline=True)
    state = loaded.net.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], v) for k, v in saved.items())


@pytest.mark.parametrize("prefix", ["", "module."])
def test_a_file_without_every_ifnet_weight_is_refused_naming_what_is_missing(
    tmp_path: Path, prefix: str
) -> None:
    extra = {"teacher.block0.conv0.0.0.weight": torch.ones(3, 3)}
    save_rife_in_hub_cache(tmp_path, prefix=prefix, extra=extra, drop=("block3.lastconv.0.bias",))
    with pytest.raises(ModelUnavailable, match="not RIFE 4.6 weights") as info:
        load_rife(RifeWeights(), cache_dir=tmp_path, offline=True)
    assert "block3.lastconv.0.bias" in info.value.message


def test_a_half_precision_run_leaves_the_loaded_fp32_weights_as_they_were(tmp_path: Path) -> None:
    """The loaded network is the master copy: a float16 run works on a copy, whatever device it runs on."""
    save_rife_in_hub_cache(tmp_path, seed=6)
    loaded = load_rife(RifeWeights(), cache_dir=tmp_path, offline=True)
    master = {key: value.clone() for key, value in loaded.net.state_dict().items()}
    interpolators = Interpolators(RifeWeights(), rife=loaded)
    plan = InterpolationPlan(Interpolator.RIFE, 2, "cpu", "float16", 4, 0.1, "a float16 run")
    frames, _ = interpolators.run(moving_square(4), 8, plan, torch.device("cpu"), CancelToken())
    assert frames.shape[0] == 8  # the run happened: 4 frames made 8
    after = loaded.net.state_dict()
    changed = [key for key, value in master.items() if not torch.equal(after[key], value)]
    assert not changed, f"{len(changed)} of {len(master)} tensors changed"
    assert all(value.dtype == torch.float32 for value in after.values())


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
