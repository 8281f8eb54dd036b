"""Training: TSPO reinforcement learning of the agent head, Temporal-RLT GRPO of the video LLM,
their shared reward library, variance-aware data selection, export and an offline toy run.

Entry points: `tspo-eval train | train-llm | toy | select-data | export` (`tspo_eval.cli.training`).
Modules: `grpo` (rollouts, log-probabilities, advantages, loss), `rewards`, `data`,
`environment` (the answerer), `rollout` (sample a group, complete it, score it: both trainers
and select-data), `trainer`, `llm_grpo`, `variance`, `export`, `toy`.
"""
