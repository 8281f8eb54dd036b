"""Frame selection: `methods` (the selectors, pure numpy over one question's scores) and
`stage` (the pipeline stage: a policy -> each question's frames, and the selections files)."""
