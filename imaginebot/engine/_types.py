"""Names for diffusers' component types in annotations.

Under ``mypy --strict`` diffusers' model and scheduler classes lose their ``torch.nn.Module`` /
``ConfigMixin`` bases (they arrive through diffusers' lazy, conditional imports), so every ``.config`` or
``.to()`` would be an error. The engine annotates them with these aliases, which mypy treats as Any; the
comment says what is meant.
"""

from typing import Any, TypeAlias

UNet: TypeAlias = Any  # diffusers.UNet2DConditionModel
Vae: TypeAlias = Any  # diffusers.AutoencoderKL
Scheduler: TypeAlias = Any  # a diffusers SchedulerMixin subclass
