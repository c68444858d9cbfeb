"""Inference pages/s of the documents detectors against torchvision's Mask R-CNN on the same backbone, and the
training step time with and without the cascade, measured in one run.

    python benchmarks/documents_detector.py                        # CPU, the CPU-sized models, 36-dpi pages
    python benchmarks/documents_detector.py --size w32 --dpi 72 --device cuda --iters 20

The peer is ``torchvision.models.detection.MaskRCNN`` built on the *same* backbone and neck instance
(HRNet + HRFPN, wrapped to return torchvision's ordered feature dict), with box and mask heads of our widths
(two FC layers, four 3x3 convs + deconvolution), and set like ours and mmdetection's config: anchors of
side 8 x stride on strides 4..64 with ratios 0.5/1/2, 1000 test proposals (2000 in
training), 512 RoIs at a quarter positives, RoIAlign 7 (box) and 14 (mask) with sampling ratio 2, score
threshold 0.05, NMS 0.5, 100 detections, and no resizing (its transform is given the page's own size).
So the ratio measures the detection toolkits, not the backbone. Inference includes pasting the masks into
the page for both (torchvision's postprocess does it); the heads are untrained, so the number of detections
each keeps (printed) differs and weighs on the mask work. Pages are rendered pages of the generator
(the test split's seed), one page per batch. Times are medians over ``--iters`` after ``--warmup``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import OrderedDict

import torch
from _timing import time_call

import panconv

SIZES = {"small": "documents.cascadetabnet_small", "w32": "documents.cascadetabnet_hrnetv2p_w32"}


def torchvision_peer(ours, num_classes: int, height: int, width: int):
    """torchvision's MaskRCNN on ``ours``' backbone + neck, configured like our one-stage detector."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    det = ours.detector

    class Body(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.neck = det.backbone, det.neck
            self.out_channels = det.neck.feature_info[0].channels

        def forward(self, x):
            feats = self.neck(self.backbone(x))
            return OrderedDict((str(i), f) for i, f in enumerate(feats[:4])) | {"pool": feats[4]}

    strides = [f.reduction for f in det.neck.feature_info]
    anchors = AnchorGenerator(tuple((8 * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
    roi = det.roi_head
    side = max(height, width)
    channels, fc = det.neck.feature_info[0].channels, roi.box_heads[0].fc2.out_features
    mask_channels = roi.mask_heads[0].logits.in_channels
    return MaskRCNN(Body(), num_classes=None,
                    box_head=TwoMLPHead(channels * 7 * 7, fc), box_predictor=FastRCNNPredictor(fc, num_classes + 1),
                    mask_head=MaskRCNNHeads(channels, [mask_channels] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1),
                    min_size=min(height, width), max_size=side,
                    image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                    rpn_anchor_generator=anchors, rpn_pre_nms_top_n_train=det.train_proposals,
                    rpn_post_nms_top_n_train=det.train_proposals, rpn_pre_nms_top_n_test=det.test_proposals,
                    rpn_post_nms_top_n_test=det.test_proposals, rpn_batch_size_per_image=det.rpn_sampler.num,
                    box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
                    mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
                    box_batch_size_per_image=roi.sampler.num, box_positive_fraction=roi.sampler.pos_fraction,
                    box_score_thresh=roi.score_thr, box_nms_thresh=roi.nms_iou, box_detections_per_img=roi.max_per_img)


def median_time(fn, args) -> float:
    return time_call(fn, iters=args.iters, warmup=args.warmup, cuda=args.device == "cuda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--dpi", type=int, default=36)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--pages", type=int, default=4, help="distinct pages cycled through")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from panconv_documents.datasets.tables import RenderedTables
    from panconv_documents.models.detection import paste_masks

    with tempfile.TemporaryDirectory() as tmp:
        data = RenderedTables(tmp, "test", eval_pages=args.pages, dpi=args.dpi)
        batches = [data.collate([data[i]]) for i in range(len(data))]
    dev = torch.device(args.device)
    batches = [{k: (v.to(dev) if isinstance(v, torch.Tensor) else [t.to(dev) for t in v]) for k, v in b.items()}
               for b in batches]
    torch.manual_seed(0)
    name = SIZES[args.size]
    cascade = panconv.create_model(name, num_classes=3).to(dev)
    one_stage = panconv.create_model(name, num_classes=3, stage_ious=(0.5,), stage_loss_weights=(1.0,),
                                     stage_stds=((0.1, 0.1, 0.2, 0.2),)).to(dev)
    one_stage.detector.backbone.load_state_dict(cascade.detector.backbone.state_dict())
    h, w = batches[0]["inputs"].shape[-2:]
    peer = torchvision_peer(one_stage, 3, h, w).to(dev)
    it = {"i": 0}

    def next_batch():
        it["i"] = (it["i"] + 1) % len(batches)
        return batches[it["i"]]

    counts = {"ours": [], "peer": []}

    def infer_ours(model):  # detections with their masks pasted into the page, as torchvision returns them
        model.eval()
        with torch.no_grad():
            for det in model.predict(model(next_batch())):
                paste_masks(det, h, w)
                counts["ours"].append(len(det.boxes))

    def infer_peer():
        peer.eval()
        with torch.no_grad():
            counts["peer"] += [len(d["boxes"]) for d in peer(list(next_batch()["inputs"]))]

    def train_ours(model):
        model.train()
        losses = model(next_batch())
        sum(v for k, v in losses.items() if "loss" in k).backward()
        model.zero_grad(set_to_none=True)

    def train_peer():
        peer.train()
        b = next_batch()
        targets = [{"boxes": bx, "labels": lb + 1, "masks": _box_masks(bx, h, w)} for bx, lb in
                   zip(b["boxes"], b["labels"])]
        sum(peer(list(b["inputs"]), targets).values()).backward()
        peer.zero_grad(set_to_none=True)

    rows = [
        ("inference: Mask R-CNN (torchvision)", median_time(infer_peer, args)),
        ("inference: Mask R-CNN (ours)", median_time(lambda: infer_ours(one_stage), args)),
        ("inference: Cascade Mask R-CNN (ours)", median_time(lambda: infer_ours(cascade), args)),
        ("train step: Mask R-CNN (torchvision)", median_time(train_peer, args)),
        ("train step: Mask R-CNN (ours)", median_time(lambda: train_ours(one_stage), args)),
        ("train step: Cascade Mask R-CNN (ours)", median_time(lambda: train_ours(cascade), args)),
    ]
    print(f"{name} ({args.size}), pages {w}x{h} at {args.dpi} dpi, batch 1, device {args.device}, "
          f"threads {args.threads}, median of {args.iters}")
    peer_inf, peer_train = rows[0][1], rows[3][1]
    print(f"{'':40s} {'s/page':>8s} {'pages/s':>8s} {'time vs torchvision':>20s}")
    for label, t in rows:
        ref = peer_inf if label.startswith("inference") else peer_train
        print(f"{label:40s} {t:8.3f} {1 / t:8.2f} {t / ref:19.2f}x")
    print(f"detections per page (untrained heads, score >= 0.05): ours {statistics.mean(counts['ours']):.0f}, "
          f"torchvision {statistics.mean(counts['peer']):.0f}")
    print(f"cascade / one-stage train step: {rows[5][1] / rows[4][1]:.2f}x; "
          f"inference: {rows[2][1] / rows[1][1]:.2f}x")


def _box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8, device=boxes.device)
    for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        masks[k, y0:y1, x0:x1] = 1
    return masks


if __name__ == "__main__":
    main()
