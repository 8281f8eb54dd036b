"""Thin adapters that put the pipeline inside evaluation frameworks (lmms-eval, VLMEvalKit).

They translate the host's requests into `answering.QuestionRef`s and hold no logic of
their own; each imports its host framework lazily.
"""
