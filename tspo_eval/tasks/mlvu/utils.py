"""lmms-eval hooks of `tspo_mlvu_dev`: every function its YAML names. Documents, prompts and scoring
live in tspo_eval (the benchmark's BenchmarkSpec, tspo_eval/benchmarks/specs.py)."""
from tspo_eval.integrations.lmms_hooks import (  # noqa: F401  (named by the YAML)
    BenchmarkHooks,
    answered,
    doc_to_text,
    doc_to_visual,
    failed,
    process_results,
)

hooks = BenchmarkHooks("mlvu")
process_docs = hooks.process_docs
accuracy = hooks.accuracy
macro_accuracy = hooks.macro_accuracy
