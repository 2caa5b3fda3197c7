"""The loader's rank and world size: given, or from torch.distributed, the Ray Train context or the
environment, never a silent single process when a distributed setting says otherwise. (The
loader over a real export, one process and two, is in test_tokens.py beside its export.)"""

import sys

import pytest

from slimpipe import loader
from slimpipe.loader import PackedLoader, RankError, _rank_and_world


@pytest.fixture(autouse=True)
def no_distributed_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_a_single_process_when_nothing_is_set():
    assert _rank_and_world(None, None) == (0, 1)


def test_the_environment_as_torchrun_sets_it(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert _rank_and_world(None, None) == (3, 4)
    assert _rank_and_world(1, None) == (1, 4)  # an explicit rank in the detected world


def test_explicit_values_win(monkeypatch):
    assert _rank_and_world(1, 2) == (1, 2)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert _rank_and_world(0, 2) == (0, 2)  # e.g. a data-parallel rank under tensor parallelism


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "4"}, "WORLD_SIZE=4 is set but RANK is not"),
        ({"RANK": "2"}, "RANK=2 is set but WORLD_SIZE is not"),
        ({"RANK": "a", "WORLD_SIZE": "2"}, "must be integers"),
    ],
)
def test_an_incomplete_environment_is_an_error(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RankError, match=message):
        _rank_and_world(None, None)


def test_a_lone_explicit_value_without_a_world_is_an_error(monkeypatch):
    with pytest.raises(RankError, match="world_size=4 was given alone"):
        _rank_and_world(None, 4)
    with pytest.raises(RankError, match="rank=1 was given alone"):
        _rank_and_world(1, None)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RankError, match="world_size=4 was given but the environment"):
        _rank_and_world(None, 4)


def test_sources_that_disagree_are_an_error(monkeypatch):
    monkeypatch.setattr(loader, "_from_torch", lambda: (0, 2))
    monkeypatch.setattr(loader, "_from_ray_train", lambda: (0, 2))
    assert _rank_and_world(None, None) == (0, 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RankError, match=r"torch.distributed says rank 0 of 2 but the environment .* rank 1 of 2"):
        _rank_and_world(None, None)
    monkeypatch.setattr(loader, "_from_ray_train", lambda: (0, 4))
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(RankError, match="the Ray Train context says rank 0 of 4"):
        _rank_and_world(None, None)


def test_an_initialised_torch_distributed_is_read_and_checked(monkeypatch, tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch without distributed")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert loader._from_torch() == (0, 1)
        assert _rank_and_world(None, None) == (0, 1)
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        with pytest.raises(RankError, match="torch.distributed says rank 0 of 1"):
            _rank_and_world(None, None)
    finally:
        dist.destroy_process_group()
    assert loader._from_torch() is None


def test_outside_ray_train_there_is_no_ray_context():
    pytest.importorskip("ray.train")
    assert loader._from_ray_train() is None


def test_without_torch_the_loader_says_what_to_install(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"the loader needs torch: pip install 'slimpipe\[gpu\]'"):
        PackedLoader(str(tmp_path / "no-export-needed"))
    with pytest.raises(ImportError, match="the loader needs torch"):
        loader.iter_shard_batches(None, batch_size=2)
