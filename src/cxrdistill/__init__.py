"""cxrdistill: pneumonia detection on chest X-rays with an InceptionV3 teacher distilled into AlexNet."""

__version__ = "0.1.0"
