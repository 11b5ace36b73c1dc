"""Training the bundled default model: synthetic checkable tasks, a character tokenizer, the
masked-diffusion SFT loop (see `python -m backend.training.train --help`)."""
