"""Pocket NLP: Hugging Face NLP models made faster and smaller on a laptop.

Importing the package is cheap: heavy libraries (onnx, onnxruntime, huggingface_hub) load lazily
inside the functions that need them, so the GUI starts fast.
"""

__version__ = "0.1.0"
