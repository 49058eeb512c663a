"""``patchcore``: the name for ``imagenet/<backbone>`` x ``patch_knn`` (PatchCore, Roth et al. 2022).

Roth, Pemula, Zepeda, Schölkopf, Brox, Gehler, "Towards Total Recall in Industrial Anomaly
Detection", CVPR 2022 (arXiv 2106.08265); official code amazon-science/patchcore-inspection. The
memory bank, greedy coreset and nearest-neighbour scoring live in ``methods/heads/patch_knn.py``;
this factory fixes PatchCore's choices: the two mid-level stages (strides 8/16,
``out_indices=(2, 3)``), 3x3 neighbourhoods, each stage pooled to 1024 values and both together to
1024 (the official ``pretrain_embed_dimension`` / ``target_embed_dimension``), 10 % coreset,
squared L2 as the official code, image score = the largest raw patch score, map blurred by the
official 4 px per 224 px.
"""

from __future__ import annotations

from methods.detectors.patch import PatchDetector
from methods.encoders.timm_frozen import FrozenTimmEncoder
from methods.heads.patch_knn import PatchKNNHead
from methods.registry import register_detector


@register_detector("patchcore", tiny=dict(coreset_ratio=0.2, reweight=True))
def patchcore(in_chans: int = 1, image_size: int = 64, *, backbone: str = "tf_efficientnet_lite0",
              pretrained: bool = True, weights: str | None = None, input_norm: str = "weights",
              out_indices: tuple[int, ...] = (2, 3), patch_size: int = 3, pool_layers: bool = True,
              count_include_pad: bool = False, pretrain_embed_dim: int = 1024, target_embed_dim: int = 1024,
              coreset_ratio: float = 0.1, projection_dim: int | None = 128, coreset_start_points: int = 10,
              num_neighbours: int = 1, metric: str = "squared", reweight: bool = False,
              reweight_neighbours: int = 9, input_size: int | None = None, sigma: float | None = None,
              preprocess: str = "none", batch_size: int = 32) -> PatchDetector:
    """PatchCore = frozen ImageNet ``backbone`` x coreset memory bank of locally aware patch features."""
    encoder = FrozenTimmEncoder(backbone, in_chans, image_size, pretrained=pretrained, weights=weights,
                                input_size=input_size, input_norm=input_norm)
    head = PatchKNNHead(stages=list(out_indices), aggregate=patch_size, pool_layers=pool_layers,
                        count_include_pad=count_include_pad,
                        pretrain_embed_dim=pretrain_embed_dim, target_embed_dim=target_embed_dim,
                        coreset_ratio=coreset_ratio, projection_dim=projection_dim,
                        coreset_start_points=coreset_start_points, num_neighbours=num_neighbours, metric=metric,
                        reweight=reweight, reweight_neighbours=reweight_neighbours, sigma=sigma,
                        preprocess=preprocess)
    return PatchDetector(encoder, head, fit_encoder=False, batch_size=batch_size, name="patchcore")
