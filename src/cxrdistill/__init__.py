"""cxrdistill: pneumonia detection on chest X-rays with an InceptionV3 teacher distilled into AlexNet.

The notebook API, loaded on first use so that ``import cxrdistill`` stays cheap::

    import cxrdistill
    cxrdistill.list_models()
    model = cxrdistill.create_model("alexnet", num_classes=2)
    config = cxrdistill.load_config("cpu/student", ["train.epochs=2"])
    run = cxrdistill.train(config)
    cxrdistill.predict(run.best_checkpoint, "chest.png")
"""

from cxrdistill.exports import lazy_exports

__version__ = "0.1.0"

__all__ = ["create_model", "distill", "evaluate", "export_onnx", "list_models", "load_checkpoint", "load_config",
           "predict", "train"]
__getattr__, __dir__ = lazy_exports(globals(), {
    "cxrdistill.api": ("create_model", "distill", "evaluate", "list_models", "load_checkpoint", "predict", "train"),
    "cxrdistill.config": ("load_config",),
    "cxrdistill.deployment.export": ("export_onnx",),
})
