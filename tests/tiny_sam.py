"""A SAM at toy width built from segment_anything's real modules, with weights set to find dark regions: what the
stage-1 tests and `benchmarks/sam_timing.py` run instead of the ViT-H weights (not available without internet)."""
from __future__ import annotations

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

TINY_DIM = 16


def tiny_sam() -> Sam:
    """A SAM with the real building blocks at toy width (the 1024 px input and 64x64 embedding SAM's code expects)."""
    return Sam(
        image_encoder=ImageEncoderViT(img_size=1024, patch_size=16, embed_dim=TINY_DIM, depth=1, num_heads=1,
                                      mlp_ratio=1.0, out_chans=TINY_DIM, window_size=8),
        prompt_encoder=PromptEncoder(embed_dim=TINY_DIM, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(transformer_dim=TINY_DIM, iou_head_depth=1, iou_head_hidden_dim=TINY_DIM,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=TINY_DIM, num_heads=1,
                                                               mlp_dim=TINY_DIM)),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


@torch.no_grad()
def make_dark_region_sam(sam: Sam, threshold: float = 200.0) -> Sam:
    """Set `sam`'s weights so that every prompt returns the pixels darker than `threshold` (the object on white).

    Embedding channel 0 carries `threshold - patch brightness`; every residual branch is zeroed, layer norms keep
    its sign, the upscaler passes channel 0 on, and each mask token reads it with a large gain (stable masks).
    """
    encoder, decoder = sam.image_encoder, sam.mask_decoder
    patch = encoder.patch_embed.proj
    patch.weight.zero_()
    patch.weight[0] = -sam.pixel_std / patch.weight[0].numel()
    patch.bias.zero_()
    patch.bias[0] = threshold - sam.pixel_mean.mean()
    encoder.pos_embed.zero_()
    residuals = [layer for block in encoder.blocks for layer in (block.attn.proj, block.mlp.lin2)]
    residuals += [layer.cross_attn_image_to_token.out_proj for layer in decoder.transformer.layers]
    for linear in residuals:
        linear.weight.zero_()
        linear.bias.zero_()
    neck_in, _, neck_out, _ = encoder.neck
    neck_in.weight.copy_(torch.eye(TINY_DIM)[:, :, None, None])
    neck_out.weight.zero_()
    neck_out.weight[:, :, 1, 1] = torch.eye(TINY_DIM)
    sam.prompt_encoder.no_mask_embed.weight.zero_()
    for upconv in (decoder.output_upscaling[0], decoder.output_upscaling[3]):
        upconv.weight.zero_()
        upconv.bias.zero_()
        upconv.weight[0, 0] = 1.0
    for mlp in decoder.output_hypernetworks_mlps:
        mlp.layers[-1].weight.zero_()
        mlp.layers[-1].bias.zero_()
        mlp.layers[-1].bias[0] = 1000.0
    iou_head = decoder.iou_prediction_head.layers[-1]
    iou_head.weight.zero_()
    iou_head.bias.fill_(0.95)
    return sam
