"""The optional-package helper: a missing package names its extra; anything else is left alone."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spacebind.errors import SpacebindError
from spacebind.extras import MissingExtraError, require


def test_an_installed_package_is_returned() -> None:
    assert require("json.decoder", "none", "parsing") is sys.modules["json.decoder"]


def test_a_missing_package_names_the_extra_to_install() -> None:
    with pytest.raises(MissingExtraError, match=r"reading \.mp4 video needs no_such_pkg_x, which is not installed: "
                                                r"pip install 'spacebind\[video\]'") as info:
        require("no_such_pkg_x.sub", "video", "reading .mp4 video")
    assert isinstance(info.value, SpacebindError) and isinstance(info.value, ImportError)


def test_a_broken_dependency_of_an_installed_package_is_not_blamed_on_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "half_installed_pkg.py").write_text("import no_such_dependency_y\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("half_installed_pkg", "events", "reading .h5 events")
    assert not isinstance(info.value, MissingExtraError) and info.value.name == "no_such_dependency_y"
