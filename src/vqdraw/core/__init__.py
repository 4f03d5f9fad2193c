"""The model: configuration, input checks, refiner, likelihood, the stage loop, beam search and VQDraw."""
