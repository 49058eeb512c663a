"""ReContrast: RD4AD-style feature reconstruction with a trainable encoder and cross-reconstruction.

Guo, Lu, Jia, Wang, Li, Zhang, Li, Wang, "ReContrast: Domain-Specific Anomaly Detection via
Contrastive Reconstruction", NeurIPS 2023 (arXiv 2306.02602); official code guojiajeremy/ReContrast.
The encoder is optimised on the target domain to shed ImageNet bias; collapse is avoided by

* a frozen copy of the pretrained encoder and a decoder that runs on the concatenated batch
  ``[E(x); E_frozen(x)]`` (shared BatchNorm statistics) with two 1x1 output heads that
  *cross*-reconstruct: head 0 on the E half predicts E_frozen's features, head 1 on the frozen half
  predicts E's;
* a *global* cosine loss per level (one cosine over the flattened C x H x W map per sample) with
  stop-gradient on the targets, halved over the two directions;
* hard mining: per-location cosine distances below ``mean + alpha std`` (over the batch) pass no
  gradient, with alpha rising linearly from -3 to 1 over the first 10% of iterations.

Between encoder and decoder sits RD4AD's one-class bottleneck (OCBE: the two finer levels are
strided down to the coarsest, concatenated, then ResNet blocks at stride 2). For ResNet backbones
the decoder is a reverse ResNet of the encoder's block type (2x2 transposed-conv upsampling, stage
sizes as the official ``de_wide_resnet50_2``: the encoder's block counts [3, 4, 6] used from deep to
shallow); other backbones (e.g. ``tf_efficientnet_lite0``) get a generic decoder of basic upsampling
blocks matched to the feature channels.

Training follows the medical scripts: AdamW lr 2e-3 (bottleneck + decoder) and 1e-5 (encoder),
betas (0.9, 0.999), weight decay 1e-5, batch 32, 1,000 iterations, no augmentation; the encoder's
BatchNorm in train mode (APTOS, ISIC; OCT2017 used eval: ``encoder_bn_train=False``). The map is
the sum of the six per-location cosine distances, each bilinearly upsampled (``align_corners=True``)
to the input and smoothed with a Gaussian of sigma 4; the image score is its max (APTOS, OCT) or
mean (ISIC).
"""

from methods.detectors.recontrast.detector import ReContrast
from methods.detectors.recontrast.torch_model import (OneClassBottleneck, ReContrastNet, ResBlock, ReverseDecoder,
                                                      anomaly_map, contrastive_loss, global_cosine_hard_mining,
                                                      resnet_layout)

__all__ = ["OneClassBottleneck", "ReContrast", "ReContrastNet", "ResBlock", "ReverseDecoder", "anomaly_map",
           "contrastive_loss", "global_cosine_hard_mining", "resnet_layout"]
