"""Training: fit, the shared loop, schedule, weight averaging, data parallelism, logging, distillation."""
