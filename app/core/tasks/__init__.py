"""Task code: tokenization, text classification and question answering over an ONNX session."""
