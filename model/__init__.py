"""i-DenseNet and Residual Flow normalizing flows in pure PyTorch (no Ray, no Optuna)."""

from .config import ConfigError, ModelConfig, toy_config

__all__ = ["ConfigError", "ModelConfig", "toy_config", "build_model"]


def __getattr__(name: str):
    # build_model is imported lazily so that `import model` (configs only) stays cheap
    if name == "build_model":
        from .flow import build_model

        return build_model
    raise AttributeError(name)
