"""Frame selection: `registry` (the selectors by name and `select`), the built-in selectors
(`methods`: the score-curve rules and the frame mapping; `dpp`; `focus`), `blip` (BLIP
image-text matching scores) and `stage` (the pipeline stage: a policy -> each question's
frames, and the selections files). Importing the package registers the built-in selectors."""
from . import dpp, focus, methods  # noqa: F401 - registration
