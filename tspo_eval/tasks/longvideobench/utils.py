"""lmms-eval hooks of `tspo_longvideobench_val` and `tspo_longvideobench_val_random_fallback`:
every function their YAMLs name. Documents, prompts and scoring live in tspo_eval (the
benchmark's BenchmarkSpec, tspo_eval/benchmarks/specs.py)."""
from tspo_eval.integrations.lmms_hooks import (  # noqa: F401  (named by the YAML)
    BenchmarkHooks,
    answered,
    doc_to_text,
    doc_to_visual,
    failed,
    process_results,
    process_results_random_fallback,
)

hooks = BenchmarkHooks("longvideobench")
process_docs = hooks.process_docs
accuracy = hooks.accuracy
