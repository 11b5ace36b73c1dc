"""The dLLM engine: models, loader, tokenizer, reference decoder (and, later, scheduler and runner)."""
