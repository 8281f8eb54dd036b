"""`python -m tspo_eval.cli ...` (what torchrun / accelerate launch run): the `tspo-eval` console script."""
import sys

from . import main

sys.exit(main())
