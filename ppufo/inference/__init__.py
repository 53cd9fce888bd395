"""Deployment: Paddle Inference / ONNX Runtime predictors, gallery search, serving."""
