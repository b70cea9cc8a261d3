"""Model registry: every model module registers itself on import."""

from sbrbench.models.base import (
    MODELS,
    Model,
    ModelConfig,
    TrainOptions,
    create_model,
    model_info,
    register_model,
    register_variant,
    resolve_config,
)
from sbrbench.models import itemknn, pop, rules, sknn, srgnn, stan  # noqa: F401,E402  (registration)

__all__ = [
    "MODELS",
    "Model",
    "ModelConfig",
    "TrainOptions",
    "create_model",
    "model_info",
    "register_model",
    "register_variant",
    "resolve_config",
]
from sbrbench.models import cmgnn  # noqa: F401,E402
from sbrbench.models import gcegnn  # noqa: F401,E402
from sbrbench.models import tagnn, tagnnpp, tagnnpp_released  # noqa: F401,E402
from sbrbench.models import bprmf, csrm, fpmc, gcsan, gru4rec, lessr, narm, repeatnet, stamp  # noqa: F401,E402
from sbrbench.models import dgtn  # noqa: F401,E402
from sbrbench.models import macl, macl_code  # noqa: F401,E402
from sbrbench.models import cl4srec, comirec_sa, duorec, mclsr, sasrec  # noqa: F401,E402
