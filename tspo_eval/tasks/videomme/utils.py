"""lmms-eval hooks of `tspo_videomme`: documents, prompts and scoring live in tspo_eval."""
from tspo_eval.integrations.lmms_tasks import task_hooks

globals().update(task_hooks("videomme"))
