"""Property: any manifest line either loads or raises a named spacebind error, never another exception."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacebind.errors import SpacebindError
from spacebind.io.datasets import Dataset
from spacebind.modalities import MODALITIES

pytestmark = pytest.mark.unit

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_paths = st.sampled_from(["a.png", "../a.png", "/etc/passwd", "", " ", "sub/../../x", "..", ".", "x\x00y", "é/ü.wav",
                          "a" * 300, "~/x", "C:\\x"]) | st.text(max_size=12)
_fields = ["id", "split", "label", "attributes", *MODALITIES, "extra"]
_values = {
    "id": st.text(max_size=6) | st.integers() | _json,
    "split": st.sampled_from(["train", "val", "test", "dev", ""]) | _json,
    "label": st.text(max_size=6) | _json,
    "attributes": st.dictionaries(st.text(max_size=4), _json, max_size=3) | _json,
    "text": st.text(max_size=10) | _json,
}
_record = st.fixed_dictionaries({}, optional={f: _values.get(f, _paths | _json) for f in _fields})
_line = _record.map(json.dumps) | _json.map(json.dumps) | st.text(max_size=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, min_size=1, max_size=4), classes=st.none() | st.just({"allow_outside_root": True}) | _json)
def test_manifest_loads_or_raises_a_named_error(tmp_path: Path, lines: list[str], classes: object) -> None:
    (tmp_path / "manifest.jsonl").write_text("\n".join(line.replace("\n", " ") for line in lines) + "\n", encoding="utf-8")
    info = tmp_path / "classes.json"
    info.unlink(missing_ok=True)
    if classes is not None:
        info.write_text(json.dumps(classes), encoding="utf-8")
    try:
        data = Dataset.load(tmp_path)
    except SpacebindError:
        return
    for item in list(data.iter_items()):
        assert isinstance(item.id, str) and item.split in ("train", "val", "test")
        assert isinstance(item.attributes, dict)
        for m, value in item.fields.items():
            assert isinstance(value, str)
            if m != "text" and classes != {"allow_outside_root": True}:
                assert Path(value).is_relative_to(tmp_path.resolve())
