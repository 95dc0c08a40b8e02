"""The public surface: ``conveyor.__all__`` is sorted and every name in it is importable."""

from __future__ import annotations

import importlib

import pytest

import conveyor


def test_all_is_sorted_and_unique() -> None:
    assert conveyor.__all__ == sorted(conveyor.__all__)
    assert len(set(conveyor.__all__)) == len(conveyor.__all__)


@pytest.mark.parametrize("name", conveyor.__all__)
def test_every_exported_name_is_importable_and_public(name: str) -> None:
    module = importlib.import_module("conveyor")
    member = getattr(module, name)
    assert not name.startswith("_")
    # Exported classes and functions belong to conveyor, not to a dependency
    owner = getattr(member, "__module__", "conveyor")
    assert owner.startswith("conveyor"), f"{name} comes from {owner}"


def test_every_public_name_is_exported() -> None:
    # Then nothing public in the package namespace is missing from __all__ (modules aside)
    public = {
        n for n, v in vars(conveyor).items()
        if not n.startswith("_") and not isinstance(v, type(conveyor))
    }  # fmt: skip
    # (names exported lazily, for an optional dependency, appear once first used)
    assert public | set(conveyor._LAZY) == set(conveyor.__all__)


def test_version() -> None:
    assert isinstance(conveyor.__version__, str) and conveyor.__version__


@pytest.mark.parametrize(
    "module",
    ["conveyor.errors", "conveyor.job", "conveyor.backends.base", "conveyor.backends"],
)
def test_submodule_all_lists_only_defined_names(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names missing {name}"
