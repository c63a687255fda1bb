"""`python -m spacebind` (and `torchrun -m spacebind`) run the command line."""
from spacebind.cli import app

app()
