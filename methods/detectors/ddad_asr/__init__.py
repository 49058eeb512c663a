"""DDAD-ASR: dual-distribution discrepancy with self-supervised anomaly score refinement.

Cai, Chen, Cheng, "Dual-distribution discrepancy with self-supervised refinement for anomaly
detection in medical images", Medical Image Analysis 86:102794 (2023), arXiv 2210.04227; official
code caiyu6666/DDAD-ASR. This is a *one-class semi-supervised* method (``setting = "oc-ssl"``):
besides the normal training images it sees an unlabeled pool that contains anomalies (built by
:func:`methods.detectors._pool.unlabeled_pool`; its labels are never read here).

* NDM: K=3 independently initialised AEs trained on the normal images; UDM: K=3 AEs trained on
  normal + unlabeled images. The AE is :class:`methods.detectors.ae.ConvAutoencoder` with the
  official sizes (64x64 input in [-1, 1], 16-32-64-64 convs, dense 1024-2048-16, unbounded output),
  Adam lr 5e-4, betas (0.5, 0.999), batch 64, 250 epochs.
* Pixel scores: intra = unbiased std over the NDM reconstructions, inter = |mean_UDM - mean_NDM|.
  Like the official AE variant, the two maps enter ASR-Net raw (no normalisation; only the AE-U
  variant divides by the predicted sigma).
* ASR-Net (3x3 convs 2->128->128->2, BN, ReLU, softmax) is trained for 100 epochs (Adam 1e-4,
  betas (0.5, 0.999), weight decay 1e-4, batch 8) with the focal loss (gamma 2, label smoothing
  1e-5, applied to softmax outputs) on synthetic anomalies: with p=0.5 a square (centre in the
  central 80%, half-width in [5%, 20%) of the side) is alpha-blended (alpha ~ U(0, 1)) with the same
  region of another normal training image.
* Image score = mean of the refined anomaly-probability map (the official "R_dual" default);
  ``score="intra" | "inter" | "rec"`` gives the variants without ASR (spatial means as well).
"""

from methods.detectors.ddad_asr.detector import DDADASR, SCORES
from methods.detectors.ddad_asr.torch_model import RefineNet, blend_squares, discrepancies, focal_loss, refine_input

__all__ = ["DDADASR", "SCORES", "RefineNet", "blend_squares", "discrepancies", "focal_loss", "refine_input"]
