"""What the engine is checked against: the reference decoder (one request, no cache, full logits:
the correctness oracle) and the accuracy evaluation of a checkpoint on the bundled tasks."""
