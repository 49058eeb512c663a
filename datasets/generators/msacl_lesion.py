"""MSACL's lesion simulator as a selection-set generator (Tian et al., MedIA 2023; the simulator of
``methods/encoders/msacl.py``, imported from :mod:`datasets.generators._lesion_synthesis`): one to
``max_lesions`` patches of the same image, warped, intensity-changed and blended in through soft
irregular blob masks. Torch is imported only when the generator runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets.generators import register_generator, to_uint8, to_unit


@dataclass
class MSACLLesion:
    """Args: ``max_lesions`` per image (1 to it, uniform) and overrides of ``LesionSynthesis``."""

    max_lesions: int = 3
    options: dict = field(default_factory=dict)

    def __call__(self, image, rng, donors, foreground):
        import torch

        from datasets.generators._lesion_synthesis import LesionSynthesis

        simulate = LesionSynthesis(**{"max_lesions": self.max_lesions, **self.options})
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        count = torch.tensor([int(rng.integers(1, self.max_lesions + 1))])
        out, masks = simulate(torch.from_numpy(to_unit(image))[None], count, generator)
        region = out[0].ne(torch.from_numpy(to_unit(image))).any(0).numpy()
        return to_uint8(out[0].numpy()), region


@register_generator("msacl_lesion", tiny=dict())
def msacl_lesion(max_lesions: int = 3, **options) -> MSACLLesion:
    """MSACL's lesion simulation: warped, intensity-shifted patches of the same image (Tian et al., MedIA 2023)."""
    return MSACLLesion(max_lesions, dict(options))
