"""Helpers for tests that tamper with fused checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

from spacebind.io.files import sha256_file


def reseal(out: Path) -> None:
    """Record the current weights' and files' checksums in the export's config, as a consistent (if crafted)
    export would, so that loading reaches the checks behind the checksum."""
    config = json.loads((out / "config.json").read_text())
    config["weights_sha256"] = sha256_file(out / "model.safetensors")
    config["files_sha256"] = {name: sha256_file(out / name) for name in config.get("files_sha256", {})
                              if (out / name).is_file()}
    (out / "config.json").write_text(json.dumps(config))
