"""Event-camera inputs: live in `spacebind.io.events`; this documented path stays importable."""
from spacebind.io.events import Events, event_frame, event_histograms, events_array, events_from_columns, read_events  # noqa: F401
