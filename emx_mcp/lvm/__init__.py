"""The next-episode predictor (LVM): a small GRU over episode vectors, its data, trainer and evaluator.

torch is imported only by `model` and `train`, so the server pays for it only when a trained
checkpoint is used.
"""
