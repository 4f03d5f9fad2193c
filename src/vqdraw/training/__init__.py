"""Training: fit, schedule and time budgets, weight averaging, data parallelism, logging, distillation (the loop they share: :mod:`vqdraw.loop`)."""
