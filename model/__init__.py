"""i-DenseNet and Residual Flow normalizing flows in pure PyTorch (no Ray, no Optuna).

``import model`` loads only the configs (no torch); the flow itself is :func:`model.flow.build_model`.
"""

from .config import ConfigError, ModelConfig, model_config, toy_config
from .errors import UserError
from .run_config import RunConfig
from .train_config import TrainConfig

__all__ = ["ConfigError", "ModelConfig", "RunConfig", "TrainConfig", "UserError", "model_config", "toy_config", "build_model"]


def __getattr__(name: str):
    # build_model is imported lazily so that `import model` (configs only) stays cheap
    if name == "build_model":
        from .flow import build_model

        return build_model
    raise AttributeError(name)
