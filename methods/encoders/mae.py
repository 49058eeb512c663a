"""MAE: masked autoencoders (He et al., CVPR 2022, arXiv:2111.06377).

"We mask random patches of the input image and reconstruct the missing pixels" [abstract]: a ViT
encoder sees only the visible 25 % of the patches, a light transformer decoder fills in mask
tokens and predicts the pixels of the masked patches, with the loss on those only. The masked
ViT (``MaskedVisionTransformerTIMM``), the decoder (``MaskedVisionTransformerDecoderTIMM``), the
masking and patchify utilities come from lightly; the ViT from timm. The density heads see the
encoder's ``[CLS]`` token of the *unmasked* image; patch heads see the patch tokens of three
blocks reshaped to ``[N, C, h, w]`` (:func:`methods.encoders._ssl.trunk_feature_maps`).
"""

from __future__ import annotations

import torch
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from torch import nn

from methods.encoders._ssl import SSLEncoder
from methods.registry import register_encoder

TINY = dict(epochs=1, batch_size=8, warmup_epochs=0, decoder_dim=16, decoder_depth=1, decoder_heads=2,
            backbone_args={"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2})


@register_encoder("mae", tiny=TINY)
class MAEEncoder(SSLEncoder):
    """MAE with a timm ViT (``vit_tiny_patch16_224`` at the image size with 8-px patches by default).

    Args:
        mask_ratio: share of patches masked (MAE: 0.75).
        decoder_dim, decoder_depth, decoder_heads: decoder size (MAE: 512-d, 8 blocks, 16 heads).
        norm_pix_loss: per-patch normalised pixel targets (MAE §A.1: improves representations).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "vit_tiny_patch16_224",
                 mask_ratio: float = 0.75, decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 norm_pix_loss: bool = True, epochs: int = 20, batch_size: int = 128, lr: float = 1.5e-4 * 128 / 256,
                 weight_decay: float = 0.05, warmup_epochs: int = 1, optimizer: str = "adamw", **kwargs):
        super().__init__(in_chans, image_size, backbone=backbone, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer, **kwargs)
        vit = self.backbone
        if not hasattr(vit, "patch_embed"):
            raise ValueError(f"mae: backbone '{backbone}' is not a vision transformer (e.g. vit_tiny_patch16_224)")
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.masked = MaskedVisionTransformerTIMM(vit=vit)          # shares the ViT's weights (and MAE-inits them)
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(num_patches=vit.patch_embed.num_patches,
                                                          embed_dim=decoder_dim, depth=decoder_depth,
                                                          num_heads=decoder_heads,
                                                          num_prefix_tokens=vit.num_prefix_tokens)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * in_chans)
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # MAE's augmentation is a random resized crop (+ flip): a single view of the suite's geometry
        images = self.augment(x, generator)
        n, seq = len(images), self.masked.sequence_length
        idx_keep, idx_mask = utils.random_token_mask(size=(n, seq), mask_ratio=self.mask_ratio, device=images.device)
        encoded = self.masked.encode(images=images, idx_keep=idx_keep)
        tokens = utils.repeat_token(self.decoder.mask_token, (n, seq))         # mask tokens everywhere ...
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder_embed(encoded).type_as(tokens))  # ... but the seen
        decoded = self.decoder(tokens)                                           # + sin-cos positions, blocks, norm
        pred = self.decoder_pred(utils.get_at_index(decoded, idx_mask))
        prefix = self.masked.vit.num_prefix_tokens
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - prefix)
        if self.norm_pix_loss:
            target = utils.normalize_mean_var(target, dim=-1)
        return nn.functional.mse_loss(pred, target)
