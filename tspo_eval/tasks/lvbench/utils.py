"""lmms-eval hooks of `tspo_lvbench`: every function its YAML names, written out here.
Documents, prompts and scoring live in tspo_eval (docs/benchmarks.md)."""
from tspo_eval.integrations.lmms_hooks import BenchmarkHooks, answered, doc_to_text, doc_to_visual, failed  # noqa: F401
from tspo_eval.integrations.lmms_hooks import process_results  # noqa: F401

hooks = BenchmarkHooks("lvbench")
process_docs = hooks.process_docs
accuracy = hooks.accuracy
