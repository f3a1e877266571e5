"""The engine of Pocket NLP: pure Python, no Qt. The GUI and the CLI are two faces on these calls."""
