"""Experts: frozen pretrained spaces, one file per family, registered on import."""
from spacebind.experts import world  # noqa: F401
from spacebind.experts import minilm  # noqa: F401
from spacebind.experts import open_clip_family  # noqa: F401
from spacebind.experts import hf_vision  # noqa: F401
from spacebind.experts import internvl  # noqa: F401
from spacebind.experts import uni3d  # noqa: F401
from spacebind.experts import ulip2  # noqa: F401
from spacebind.experts import imagebind  # noqa: F401
from spacebind.experts import clap  # noqa: F401
from spacebind.experts import wavcaps  # noqa: F401
