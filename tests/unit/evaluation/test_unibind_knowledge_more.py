"""Knowledge bases: a class with an empty description list counts as missing; descriptions must be
non-empty strings; a file with no class is refused."""
import json
from pathlib import Path

import pytest

from spacebind.errors import InputError
from spacebind.unibind.knowledge import load_knowledge, require_classes


def test_a_class_with_no_descriptions_is_missing() -> None:
    with pytest.raises(InputError, match=r"no descriptions for class\(es\) \['cat'\]"):
        require_classes({"dog": ["barks"], "cat": []}, ["dog", "cat"])


@pytest.mark.parametrize("bad", [["barks", 3], ["barks", "  "]])
def test_descriptions_must_be_non_empty_strings(tmp_path: Path, bad: list) -> None:
    (tmp_path / "kb.json").write_text(json.dumps({"dog": bad}))
    with pytest.raises(InputError, match="descriptions must be a list of non-empty strings"):
        load_knowledge(tmp_path / "kb.json")


@pytest.mark.parametrize("name, text", [("kb.json", "{}"), ("kb.jsonl", "\n\n")])
def test_a_knowledge_base_without_classes_is_refused(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match="no classes"):
        load_knowledge(tmp_path / name)
