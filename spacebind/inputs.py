"""Input loading: lives in `spacebind.io.inputs`; this documented path stays importable."""
from spacebind.io.inputs import Audio, LoadResult, load_input, load_inputs, load_inputs_lenient, resample  # noqa: F401
