"""Table structure recognition (CascadeTabNet's rules) scored with cell adjacency F1 (ICDAR 2019 track B) on
held-out rendered pages and on the ruled tables of tabula-py's test PDFs.

    PANCONV_DATA=/work/shared/data python benchmarks/documents_structure.py
    PANCONV_DATA=/work/shared/data python benchmarks/documents_structure.py \
        --model work_dirs/documents_cascadetabnet_tables_long --dpi 72 --detect-dpi 36 --threshold 0.5

Rows: ``true boxes`` runs the rules on the ground-truth table boxes (and, for borderless tables, the true
non-empty cell boxes): the structure stage alone. ``lines only`` finds ruled tables on the page by line
detection, no detector. ``detector`` is the whole pipeline with a trained detector (``--model``, a core-run
work dir), tables and cells kept at its ``structure_thr`` score (the official demo's 0.85) unless
``--threshold`` is given. ``--detect-dpi`` runs the detector on the same pages rasterised at its training
resolution and the rules on the ``--dpi`` pages (boxes scaled by ``dpi / detect_dpi``): the rules need
resolution (ruling lines and 4 px rows vanish at 36 dpi), the detector is trained at 36 dpi. The figures are
F1 at cell IoU 0.6 and the IoU-weighted average over 0.6-0.9.
"""

from __future__ import annotations

import argparse

from panconv.testing import shared_data_root


def score(data, predict, bordered_only: bool = False) -> dict:
    from panconv_documents.evaluators.adjacency import CellAdjacencyF1

    ev = CellAdjacencyF1()
    for i in range(len(data)):
        gt = [t for t in data.structures[data.coco.images[i]["id"]] if t["bordered"] or not bordered_only]
        ev.process({"tables": [gt]}, [predict(i, gt)])
    return ev.compute()


def detect_then_rules(model, detect_gray, gray, threshold: float) -> list[dict]:
    """The detector on ``detect_gray``, its boxes scaled to ``gray``'s pixels, the rules on ``gray``."""
    from panconv_documents.tools.tables import tables_by_model

    return tables_by_model(model, gray, threshold, "cpu", detect_gray=detect_gray)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--dpi", type=int, default=36, help="the pages' resolution for the structure rules")
    parser.add_argument("--detect-dpi", type=int, default=None,
                        help="the detector's input resolution (its training dpi; default: --dpi)")
    parser.add_argument("--pages", type=int, default=40, help="rendered test pages (the test split's seed)")
    parser.add_argument("--model", default=None, help="a trained documents detector (core-run work dir)")
    parser.add_argument("--threshold", type=float, default=None)
    args = parser.parse_args()
    root = args.data_root or shared_data_root()
    if root is None:
        raise SystemExit("no data root: pass --data-root or set PANCONV_DATA")
    from panconv_documents.datasets.real_pdfs import TabulaPDFs
    from panconv_documents.datasets.tables import RenderedTables
    from panconv_documents.models.cascadetabnet import detections_from_structures, page_structure
    from panconv_documents.tools.tables import tables_by_lines

    detect_dpi = args.detect_dpi or args.dpi

    def both(make):  # (pages for the rules, pages for the detector): the same pages at two resolutions
        data = make(args.dpi)
        det = data if detect_dpi == args.dpi else make(detect_dpi)
        names = [im["file_name"] for im in data.coco.images]
        if names != [im["file_name"] for im in det.coco.images]:
            raise SystemExit(f"the pages at {args.dpi} and {detect_dpi} dpi differ")
        return data, det

    sets = {"rendered test pages": both(lambda d: RenderedTables(root, "test", eval_pages=args.pages, dpi=d))}
    try:
        sets["tabula-py test PDFs"] = both(lambda d: TabulaPDFs(root, "test", dpi=d))
    except Exception as exc:  # noqa: BLE001 - reported, the rendered figures still print
        print(f"(tabula-py PDFs skipped: {exc})")
    model = None
    if args.model:
        from panconv import load_model

        model = load_model(args.model)
        model.eval()
    threshold = args.threshold if args.threshold is not None else getattr(model, "structure_thr", 0.85)
    print(f"rules on pages at {args.dpi} dpi, detector at {detect_dpi} dpi; cell adjacency F1 (ICDAR 2019 track B)")
    print(f"{'data':24s} {'method':50s} {'pages':>5s} {'tables':>6s} {'F1@0.6':>7s} {'WAvgF1':>7s}")
    for name, (data, det_data) in sets.items():
        n_tables = len(data.coco.tables)
        methods = {"true boxes (rules only)": lambda i, gt, d=data: page_structure(
            d.image(i), detections_from_structures(gt), 3, 0.5),
            "lines only (no detector)": lambda i, gt, d=data: tables_by_lines(d.image(i))}
        if model is not None:
            methods[f"detector ({args.model}, >= {threshold})"] = lambda i, gt, d=data, e=det_data: detect_then_rules(
                model, e.image(i), d.image(i), threshold)
        for method, predict in methods.items():
            m = score(data, predict)
            print(f"{name:24s} {method:50s} {len(data):5d} {n_tables:6d} {m['F1@0.6']:7.3f} {m['WAvgF1']:7.3f}")


if __name__ == "__main__":
    main()
