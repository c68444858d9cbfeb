"""What panconv-documents registers: lazy "module:attr" strings, so listing imports no torch."""

from panconv import hookimpl

_M = "panconv_documents.models"
_RCNN, _CTN = f"{_M}.detection:RCNN", f"{_M}.cascadetabnet:CascadeTabNet"
_ONE_STAGE = dict(stage_ious=(0.5,), stage_loss_weights=(1.0,), stage_stds=((0.1, 0.1, 0.2, 0.2),))
# CPU-sized detector: HRNet-W18-small, 64-channel pyramid, 256-wide box head, fewer samples and proposals
_SMALL = dict(backbone="hrnet_w18_small", neck_channels=64, fc_channels=256, mask_channels=64,
              rpn_num_samples=256, rcnn_num_samples=128, train_proposals=300, test_proposals=200)


@hookimpl
def panconv_register_models(register):
    register("HRNetV2p", f"{_M}.layers:HRNetV2p", kind="backbone",
             doc="HRNet (Wang et al., TPAMI 2020) four parallel branches, timm's architecture built without weights")
    register("hrnetv2p_w32", f"{_M}.layers:HRNetV2p", kind="backbone", args=dict(variant="hrnet_w32"),
             doc="HRNetV2p-W32 backbone (branches 32/64/128/256 at strides 4-32): 29.3M params, no head")
    register("HRFPN", f"{_M}.layers:HRFPN", kind="neck",
             doc="the HRNetV2p neck: concat of the upsampled branches, 1x1 conv, average-pooled pyramid, 3x3 convs")
    register("RCNN", _RCNN, kind="model",
             doc="two-stage detector toolkit on torchvision.ops: Faster / Mask / Cascade (Mask) R-CNN on HRNetV2p")
    register("faster_rcnn_hrnetv2p_w32", _RCNN, kind="model", args=dict(with_mask=False, **_ONE_STAGE),
             doc="Faster R-CNN, HRNetV2p-W32 + HRFPN (mmdetection config values)")
    register("mask_rcnn_hrnetv2p_w32", _RCNN, kind="model", args=dict(**_ONE_STAGE),
             doc="Mask R-CNN, HRNetV2p-W32 + HRFPN (mmdetection config values)")
    register("cascade_mask_rcnn_hrnetv2p_w32", _RCNN, kind="model",
             doc="Cascade Mask R-CNN, HRNetV2p-W32 + HRFPN: stage IoUs 0.5/0.6/0.7, loss weights 1/0.5/0.25")
    register("CascadeTabNet", _CTN, kind="model",
             doc="CascadeTabNet (Prasad et al., CVPRW 2020): Cascade Mask R-CNN HRNetV2p-W32 for bordered/borderless "
                 "tables and cells, rule-based structure recognition")
    register("cascadetabnet_hrnetv2p_w32", _CTN, kind="model", args=dict(backbone="hrnet_w32"),
             doc="CascadeTabNet as the official config (HRNetV2p-W32, 256-channel HRFPN, 1024-wide box heads)")
    register("cascadetabnet_small", _CTN, kind="model", args=dict(_SMALL),
             doc="CascadeTabNet scaled down for CPU runs (HRNet-W18-small, 64-channel pyramid, 256-wide heads)")
    register("RetinaNetBVR", f"{_M}.bvr:RetinaNetBVR", kind="model",
             doc="RelationNet++ / BVR (Chi et al., NeurIPS 2020) on the toolkit's RetinaNet (HRNet + HRFPN P3-P6): "
                 "anchor features attend to sampled centre / corner keys with a shared location embedding; "
                 "bvr=False is the plain RetinaNet")
    register("retinanet_bvr_small", f"{_M}.bvr:RetinaNetBVR", kind="model",
             args=dict(backbone="hrnet_w18_small", channels=64, heads=4, num_keys=20, embed_dim=32),
             doc="RetinaNet + BVR at CPU size (HRNet-W18-small, 64 channels, 4 heads, 20 keys per point type)")
    # --- FCOS + BVR (RelationNet++ on an anchor-free head) ---
    register("FCOSBVR", f"{_M}.fcos:FCOSBVR", kind="model",
             doc="FCOS (Tian et al., ICCV 2019) on HRNet + HRFPN P3-P7 with RelationNet++ / BVR: per-location class "
                 "(focal), l/t/r/b distances (GIoU) and centre-ness (BCE), FCOS's scale ranges and centre "
                 "sampling; the location features attend to sampled centre / corner keys; bvr=False is plain FCOS")
    register("fcos_bvr_small", f"{_M}.fcos:FCOSBVR", kind="model",
             args=dict(backbone="hrnet_w18_small", channels=64, heads=4, num_keys=20, embed_dim=32),
             doc="FCOS + BVR at CPU size (HRNet-W18-small, 64 channels, 4 heads, 20 keys per point type): "
                 "2,088,218 params with 3 classes (1,979,053 plain, bvr=False)")
    register("mask_rcnn_small", _RCNN, kind="model", args=dict(**_SMALL, **_ONE_STAGE),
             doc="Mask R-CNN at the size of cascadetabnet_small (its one-stage baseline)")
    register("HiResLLaVA", f"{_M}.hires_llava:HiResLLaVA", kind="model",
             doc="HiRes-LLaVA (Huang et al. 2024), scaled down: sliced high-resolution ViT with SliceRestore "
                 "adapters (merge slices, depthwise-conv + pooled self-attention context, re-slice), Self-Mining "
                 "Sampler token compression, causal language decoder; restore=False is naive slicing")
    register("hires_llava_small", f"{_M}.hires_llava:HiResLLaVA", kind="model",
             args=dict(grid=2, slice_size=32, patch_size=8, vit_dim=64, vit_depth=4, vit_heads=4, sampler="sms",
                       ratio=2, lm_dim=128, lm_depth=2, lm_heads=4),
             doc="HiRes-LLaVA at CPU size for 64x64 EntityGrid-QA: 2x2 slices of 32 px + global view, 8 px patches, "
                 "ViT 64x4, SMS 4x compression (20 visual tokens), 128x2 decoder: 754,464 params with the 32-word "
                 "vocabulary (664,096 without the adapters); the paper's CLIP ViT-L/14-336 + Vicuna is not "
                 "reproducible offline")


@hookimpl
def panconv_register_datasets(register):
    register("RenderedTables", "panconv_documents.datasets.tables:RenderedTables",
             doc="generated pages (reportlab -> PDF -> pdftoppm PNG) with bordered/borderless tables, spans, text "
                 "and rules; exact table/cell boxes and structure; cached under the data root")
    register("DetectionCanvases", "panconv_documents.datasets.canvases:DetectionCanvases",
             doc="generated grey canvases with rectangles, ellipses and triangles and their exact boxes (in memory)")
    register("TabulaPDFs", "panconv_documents.datasets.real_pdfs:TabulaPDFs",
             doc="the test PDFs of the tabula-py 2.10.0 sdist, rasterised, with table structure from their ruling "
                 "lines (pdfplumber)")
    register("EntityGridQA", "panconv_documents.datasets.entitygrid:EntityGridQA",
             doc="generated EntityGrid-QA (HiRes-LLaVA's benchmark): coloured shapes at 9 positions of an image cut "
                 "into 2x2 slices, identify / position / count questions with one-word answers (in memory)")


@hookimpl
def panconv_register_evaluators(register):
    register("DetectionMAP", "panconv_documents.evaluators.detection_map:DetectionMAP",
             doc="COCO-style box AP@[.5:.95], AP50, AP75 and per-class AP50 (101-point interpolation)")
    register("CellAdjacencyF1", "panconv_documents.evaluators.adjacency:CellAdjacencyF1",
             doc="ICDAR 2019 track B cell adjacency relation P/R/F1 at cell IoU 0.6-0.9 and their weighted average")
    register("QAAccuracy", "panconv_documents.evaluators.qa:QAAccuracy",
             doc="one-word VQA accuracy, per task and for entities cut / not cut by a slice boundary (EntityGrid-QA)")


@hookimpl
def panconv_register_transforms(register):
    register("Dilation", "panconv_documents.transforms:Dilation",
             doc="CascadeTabNet's dilation: binarise at 220, dilate ink with a 2x2 kernel (sample transform)")
    register("Smudge", "panconv_documents.transforms:Smudge",
             doc="CascadeTabNet's smudge: L2/L1/chessboard distance transforms of the binarised page merged to grey")


@hookimpl
def panconv_add_commands(subparsers):
    parser = subparsers.add_parser("tables", help="detect tables in an image or PDF and write their structure "
                                                  "(JSON + HTML)")
    parser.add_argument("input", help="a page image (PNG/JPEG) or a PDF")
    parser.add_argument("-o", "--output", default="tables_out", help="output folder")
    parser.add_argument("--model", default=None, help="a trained detector: a work dir written by core-run "
                                                     "(e.g. work_dirs/documents_cascadetabnet_cells) or a checkpoint")
    parser.add_argument("--config", default=None, help="the config of a checkpoint outside its work dir")
    parser.add_argument("--dpi", type=int, default=36, help="rasterisation of PDFs for the structure rules (an "
                                                               "image is taken to be at this dpi)")
    parser.add_argument("--detect-dpi", type=int, default=None,
                        help="the detector's input resolution, its training pages' dpi (default: --dpi); e.g. "
                             "--detect-dpi 36 --dpi 72: detect at 36 dpi, rules at 72 (hairline rules vanish at 36)")
    parser.add_argument("--threshold", type=float, default=None, help="detection score threshold (default: the "
                                                                        "model's structure_thr)")
    parser.add_argument("--lines-only", action="store_true",
                        help="no detector: the ruled tables found on the page by line detection alone")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=lambda args: __import__("panconv_documents.tools.tables").tools.tables.main(args))
