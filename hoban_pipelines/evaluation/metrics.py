"""Detection metrics of the team's evaluation protocol, computed from DataFrames.

Written by hand rather than taken from pycocotools or ultralytics because the team needs TP/FP/FN, recall by
truth size, the kind of every false positive and the confusion matrix from the same matching that gives mAP;
pycocotools is only the reference the tests hold these numbers against.

Inputs: ``detections`` (image, cls, score, x1, y1, x2, y2 in pixels; other columns are ignored), ``truth``
(image, cls, x1, y1, x2, y2) and ``images``, every evaluated image name. The matching is COCO's: per image and
class, detections in descending score order (ties by input order) each take the unmatched truth box of highest
IoU at or above the threshold (ties by the later truth row, as pycocotools breaks them). A detection counts at a
confidence threshold when its score is at or above it. Every ratio with a zero denominator is 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

BOX = ["x1", "y1", "x2", "y2"]
DETECTION_COLUMNS = ["image", "cls", "score", *BOX]
TRUTH_COLUMNS = ["image", "cls", *BOX]
# built as pycocotools builds them, so that every IoU comparison is against the same float
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
SIZE_EDGES = (0.0, 16.0, 32.0, 64.0, 128.0, float("inf"))
FP_KINDS = ("duplicate", "wrong_class", "localisation", "background")
# a same-class overlap below this is not a misplaced box of that person but an alarm on something else
LOCALISATION_IOU = 0.1
BACKGROUND = "background"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4) as an (N, M) array; boxes are x1, y1, x2,
    y2. Two boxes with an empty union (both degenerate) have IoU 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    width = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(min=0)
    height = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(min=0)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class Matching:
    """One matching at IoU ``iou``, aligned with its inputs (same index).

    ``detections``: image, cls, score, tp, truth_index (index label of the matched truth row, -1 for none),
    best_iou (highest IoU with any truth box on its image), class_iou (highest with one of its own class) and kind
    ("tp" or one of ``FP_KINDS``). ``truth``: image, cls, matched and detection_index (-1 for none)."""

    iou: float
    detections: pd.DataFrame
    truth: pd.DataFrame


@dataclass(frozen=True)
class Scores:
    """Everything ``score`` measures on one prediction set.

    ``per_class``: rows of class, truth, tp, fp, fn, precision, recall, f1, ap50, ap50_95 (the APs are None for a
    class without truth boxes, which mAP leaves out). ``sizes``: rows of bucket, truth, matched, recall.
    ``fp_kinds``: count per kind of ``FP_KINDS`` (they add up to ``fp``). ``confusion``: rows = truth, columns =
    predicted, both labelled by ``confusion_labels`` (the classes, then "background")."""

    conf: float
    iou: float
    images: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    map50: float
    map50_95: float
    per_class: list[dict]
    sizes: list[dict]
    fp_kinds: dict[str, int]
    confusion: list[list[int]]
    confusion_labels: list[str]


@dataclass(frozen=True)
class _Scene:
    """The inputs as arrays (positions instead of index labels) with every overlapping same-image pair."""

    det_cls: np.ndarray
    det_rank: np.ndarray  # position in descending score order, ties by input order
    truth_cls: np.ndarray
    truth_boxes: np.ndarray
    pair_det: np.ndarray
    pair_truth: np.ndarray
    pair_iou: np.ndarray
    same_class: np.ndarray  # per pair

    @property
    def n_det(self) -> int:
        return len(self.det_cls)

    @property
    def n_truth(self) -> int:
        return len(self.truth_cls)

    def best_iou(self, pairs: np.ndarray) -> np.ndarray:
        """Per detection, its highest IoU over the selected pairs (0 where it has none)."""
        best = np.zeros(self.n_det)
        np.maximum.at(best, self.pair_det[pairs], self.pair_iou[pairs])
        return best

    def match(self, threshold: float) -> np.ndarray:
        """The truth position each detection takes at IoU ``threshold`` (-1 for none)."""
        pairs = self.same_class & (self.pair_iou >= threshold)
        return _greedy(self, pairs)


def _require(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} lack columns {missing}")


def _image_codes(detections: pd.DataFrame, truth: pd.DataFrame, images: Sequence[str] | None):
    """Integer image codes for both frames; with ``images``, a row on an image outside it is a ValueError."""
    det_names, truth_names = detections["image"].to_numpy(), truth["image"].to_numpy()
    if images is None:
        codes, _ = pd.factorize(np.concatenate([det_names, truth_names]))
        return codes[: len(det_names)], codes[len(det_names) :]
    known = pd.Index(pd.unique(np.asarray(list(images), dtype=object)))
    det_codes, truth_codes = known.get_indexer(det_names), known.get_indexer(truth_names)
    for name, names, codes in (("detections", det_names, det_codes), ("truth boxes", truth_names, truth_codes)):
        if (codes < 0).any():
            unknown = sorted({str(n) for n in names[codes < 0]})
            raise ValueError(f"{name} on images outside the evaluated list: {unknown[:5]}")
    return det_codes, truth_codes


def _overlaps(det_image, det_boxes, truth_image, truth_boxes):
    """Every (detection, truth) pair on the same image with IoU > 0, as two position arrays and the IoU."""
    det_order = np.argsort(det_image, kind="stable")
    truth_order = np.argsort(truth_image, kind="stable")
    n_images = int(max(det_image.max(initial=-1), truth_image.max(initial=-1))) + 1
    det_start = np.searchsorted(det_image[det_order], np.arange(n_images + 1))
    truth_start = np.searchsorted(truth_image[truth_order], np.arange(n_images + 1))
    chunks = []
    for image in np.flatnonzero((np.diff(det_start) > 0) & (np.diff(truth_start) > 0)):
        dets = det_order[det_start[image] : det_start[image + 1]]
        truths = truth_order[truth_start[image] : truth_start[image + 1]]
        iou = box_iou(det_boxes[dets], truth_boxes[truths])
        rows, cols = np.nonzero(iou > 0)
        chunks.append((dets[rows], truths[cols], iou[rows, cols]))
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    det, truth, iou = (np.concatenate(part) for part in zip(*chunks))
    return det, truth, iou


def _scene(detections: pd.DataFrame, truth: pd.DataFrame, images: Sequence[str] | None = None) -> _Scene:
    _require(detections, DETECTION_COLUMNS, "detections")
    _require(truth, TRUTH_COLUMNS, "truth")
    det_image, truth_image = _image_codes(detections, truth, images)
    det_cls = detections["cls"].to_numpy(np.int64)
    truth_cls = truth["cls"].to_numpy(np.int64)
    truth_boxes = truth[BOX].to_numpy(np.float64)
    det_boxes = detections[BOX].to_numpy(np.float64)
    pair_det, pair_truth, pair_iou = _overlaps(det_image, det_boxes, truth_image, truth_boxes)
    rank = np.empty(len(detections), np.int64)
    rank[np.argsort(-detections["score"].to_numpy(np.float64), kind="stable")] = np.arange(len(detections))
    return _Scene(
        det_cls=det_cls,
        det_rank=rank,
        truth_cls=truth_cls,
        truth_boxes=truth_boxes,
        pair_det=pair_det,
        pair_truth=pair_truth,
        pair_iou=pair_iou,
        same_class=det_cls[pair_det] == truth_cls[pair_truth],
    )


def _greedy(scene: _Scene, pairs: np.ndarray) -> np.ndarray:
    """COCO's greedy one-to-one matching over the selected candidate pairs: the truth position each detection
    takes, -1 for none.

    Solved in rounds rather than one detection at a time: a detection none of whose candidate truth boxes is
    wanted by an earlier-ranked unsettled detection chooses now what it would choose in its turn, so each round
    settles all of those at once; the rounds are bounded by the truth boxes of the largest cluster of overlaps."""
    taken = np.full(scene.n_det, -1, np.int64)
    truth_taken = np.zeros(scene.n_truth, bool)
    det, truth, iou = scene.pair_det[pairs], scene.pair_truth[pairs], scene.pair_iou[pairs]
    # in rank order, each detection's candidates best first (equal IoU: later truth row first, as pycocotools)
    order = np.lexsort((-truth, -iou, scene.det_rank[det]))
    det, truth = det[order], truth[order]
    while det.size:
        # the first pair of each truth box is that of the earliest detection wanting it
        _, first, inverse = np.unique(truth, return_index=True, return_inverse=True)
        blocked = np.zeros(scene.n_det, bool)
        blocked[det[det != det[first][inverse]]] = True
        free = ~blocked[det]
        winners, best = np.unique(det[free], return_index=True)
        taken[winners] = truth[free][best]
        truth_taken[taken[winners]] = True
        keep = (taken[det] < 0) & ~truth_taken[truth]
        det, truth = det[keep], truth[keep]
    return taken


def _kinds(scene: _Scene, taken: np.ndarray, threshold: float) -> np.ndarray:
    """Per detection "tp" or its false-positive kind at IoU ``threshold`` (0.5 in the protocol)."""
    class_iou = scene.best_iou(scene.same_class)
    other_iou = scene.best_iou(~scene.same_class)
    # an unmatched detection reaching the threshold with a truth box of its class lost it to a higher-scored one
    return np.select(
        [taken >= 0, class_iou >= threshold, other_iou >= threshold, class_iou >= LOCALISATION_IOU],
        ["tp", "duplicate", "wrong_class", "localisation"],
        BACKGROUND,
    )


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray):
    """Precision, recall and F1 elementwise, 0/0 as 0.0; one function so every caller gets identical floats."""
    tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return precision, recall, f1


def _check_classes(cls: np.ndarray, n_classes: int, name: str) -> None:
    outside = np.unique(cls[(cls < 0) | (cls >= n_classes)])
    if outside.size:
        raise ValueError(f"{name} with cls outside 0..{n_classes - 1}: {outside.tolist()[:5]}")


def _labels(index: pd.Index, positions: np.ndarray) -> np.ndarray:
    """The index labels at ``positions``, -1 where the position is -1 (it reads the appended -1)."""
    return np.append(index.to_numpy(), -1)[positions]


def match(
    detections: pd.DataFrame, truth: pd.DataFrame, iou: float = 0.5, images: Sequence[str] | None = None
) -> Matching:
    """Match ``detections`` to ``truth`` at IoU ``iou`` (with ``images``, rows on other images are a ValueError).

    Match once at the lowest confidence and read every higher threshold off it with ``counts_by_conf``."""
    scene = _scene(detections, truth, images)
    taken = scene.match(iou)
    claimed = np.full(scene.n_truth, -1, np.int64)
    claimed[taken[taken >= 0]] = np.flatnonzero(taken >= 0)
    matched_detections = pd.DataFrame(
        {
            "image": detections["image"].to_numpy(),
            "cls": scene.det_cls,
            "score": detections["score"].to_numpy(np.float64),
            "tp": taken >= 0,
            "truth_index": _labels(truth.index, taken),
            "best_iou": scene.best_iou(np.ones(len(scene.pair_det), bool)),
            "class_iou": scene.best_iou(scene.same_class),
            "kind": _kinds(scene, taken, iou),
        },
        index=detections.index,
    )
    matched_truth = pd.DataFrame(
        {
            "image": truth["image"].to_numpy(),
            "cls": scene.truth_cls,
            "matched": claimed >= 0,
            "detection_index": _labels(detections.index, claimed),
        },
        index=truth.index,
    )
    return Matching(iou=float(iou), detections=matched_detections, truth=matched_truth)


@dataclass(frozen=True)
class SubsetScores:
    """One subset's counts from ``score_subsets``; ``sizes`` as in ``Scores``."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    sizes: list[dict]


def score_subsets(
    detections: pd.DataFrame, truth: pd.DataFrame, images: Sequence[str], keeps: Sequence[np.ndarray],
    iou: float = 0.5, size_edges: Sequence[float] = SIZE_EDGES,
) -> list[SubsetScores]:
    """TP/FP/FN, P/R/F1 and recall by size of each subset of ``detections`` (a boolean mask per subset, in row
    order), each matched on its own: what ``score`` gives for ``detections[keep]``, without mAP.

    One scene serves every subset: a subset's greedy matching needs only the pairs of its kept detections, in the
    same rank order, so the overlaps are found once (a gate sweep scores 49 subsets of one merged set)."""
    scene = _scene(detections, truth, images)
    candidates = scene.same_class & (scene.pair_iou >= iou)
    results = []
    for keep in keeps:
        keep = np.asarray(keep, bool)
        taken = _greedy(scene, candidates & keep[scene.pair_det])
        matched = np.zeros(scene.n_truth, bool)
        matched[taken[taken >= 0]] = True
        tp = int((taken >= 0).sum())
        fp, fn = int(keep.sum()) - tp, scene.n_truth - tp
        precision, recall, f1 = (float(v) for v in _prf(tp, fp, fn))
        results.append(SubsetScores(tp, fp, fn, precision, recall, f1, _sizes(scene, matched, size_edges)))
    return results


def counts_by_conf(matching: Matching, thresholds: Sequence[float], classes: Sequence[str]) -> pd.DataFrame:
    """TP, FP, FN, precision, recall and F1 at every confidence threshold, per class and for "all": one row per
    (conf, class). Read off one matching by cumulative sums: greedy matching in score order is prefix-consistent,
    so the detections at or above a threshold are matched as they would be on their own."""
    n_classes = len(classes)
    cls = matching.detections["cls"].to_numpy(np.int64)
    truth_cls = matching.truth["cls"].to_numpy(np.int64)
    _check_classes(cls, n_classes, "detections")
    _check_classes(truth_cls, n_classes, "truth boxes")
    thresholds = np.asarray(thresholds, np.float64).reshape(-1)
    score = matching.detections["score"].to_numpy(np.float64)
    hit = matching.detections["tp"].to_numpy(bool)
    tp = np.zeros((len(thresholds), n_classes + 1), np.int64)
    kept = np.zeros_like(tp)
    for k in range(n_classes):
        mine = np.flatnonzero(cls == k)
        order = np.argsort(-score[mine], kind="stable")
        descending = score[mine][order]
        cumulative = np.concatenate([[0], np.cumsum(hit[mine][order])])
        # how many of the class's detections score at or above each threshold
        kept[:, k] = np.searchsorted(-descending, -thresholds, side="right")
        tp[:, k] = cumulative[kept[:, k]]
    tp[:, n_classes], kept[:, n_classes] = tp[:, :n_classes].sum(axis=1), kept[:, :n_classes].sum(axis=1)
    truth_count = np.bincount(truth_cls, minlength=n_classes)
    fn = np.append(truth_count, truth_count.sum()) - tp
    fp = kept - tp
    precision, recall, f1 = _prf(tp, fp, fn)
    return pd.DataFrame(
        {
            "conf": np.repeat(thresholds, n_classes + 1),
            "class": np.tile(np.array([*classes, "all"], dtype=object), len(thresholds)),
            "tp": tp.ravel(),
            "fp": fp.ravel(),
            "fn": fn.ravel(),
            "precision": precision.ravel(),
            "recall": recall.ravel(),
            "f1": f1.ravel(),
        }
    )


def _average_precision(hits: np.ndarray, n_truth: int) -> np.ndarray:
    """COCO's 101-point interpolated AP of each row of ``hits`` (thresholds x detections in descending score)."""
    if hits.shape[1] == 0:
        return np.zeros(len(hits))
    tp = np.cumsum(hits, axis=1)
    fp = np.cumsum(~hits, axis=1)
    recall = tp / n_truth
    # the interpolated precision at a recall is the best precision at that recall or any higher one
    precision = np.maximum.accumulate((tp / (tp + fp))[:, ::-1], axis=1)[:, ::-1]
    ap = np.empty(len(hits))
    for row, (at_recall, at_precision) in enumerate(zip(recall, precision)):
        reached = np.searchsorted(at_recall, RECALL_POINTS, side="left")
        ap[row] = np.where(reached < hits.shape[1], at_precision[np.minimum(reached, hits.shape[1] - 1)], 0.0).mean()
    return ap


def _bucket_names(edges: Sequence[float]) -> list[str]:
    names = []
    for low, high in zip(edges[:-1], edges[1:]):
        if low <= 0 and np.isinf(high):
            names.append("all")
        elif low <= 0:
            names.append(f"<{high:g}")
        elif np.isinf(high):
            names.append(f">={low:g}")
        else:
            names.append(f"{low:g}-{high:g}")
    return names


def _sizes(scene: _Scene, truth_matched: np.ndarray, edges: Sequence[float]) -> list[dict]:
    """Truth boxes, matched ones and recall per size bucket [low, high) of sqrt(w * h) in pixels."""
    edges = [float(edge) for edge in edges]
    if len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"size edges must be at least two increasing values, got {edges}")
    wh = (scene.truth_boxes[:, 2:] - scene.truth_boxes[:, :2]).clip(min=0)
    bucket = np.searchsorted(edges, np.sqrt(wh[:, 0] * wh[:, 1]), side="right") - 1
    rows = []
    for index, name in enumerate(_bucket_names(edges)):
        inside = bucket == index
        total, matched = int(inside.sum()), int(truth_matched[inside].sum())
        recall = float(_prf(matched, 0, total - matched)[1])
        rows.append({"bucket": name, "truth": total, "matched": matched, "recall": recall})
    return rows


def _confusion(scene: _Scene, taken: np.ndarray, truth_matched: np.ndarray, iou: float, n_classes: int) -> np.ndarray:
    """Rows = truth class, columns = predicted class, the last of each being background: the matching's pairs,
    then the leftover detections matched to the leftover truth boxes regardless of class by the same rule."""
    leftover = (scene.pair_iou >= iou) & (taken[scene.pair_det] < 0) & ~truth_matched[scene.pair_truth]
    assigned = np.where(taken >= 0, taken, _greedy(scene, leftover))
    # position -1 (no truth box) reads the appended background label
    truth_label = np.append(scene.truth_cls, n_classes)[assigned]
    missed = np.ones(scene.n_truth, bool)
    missed[assigned[assigned >= 0]] = False
    rows = np.concatenate([truth_label, scene.truth_cls[missed]])
    columns = np.concatenate([scene.det_cls, np.full(int(missed.sum()), n_classes)])
    size = n_classes + 1
    return np.bincount(rows * size + columns, minlength=size * size).reshape(size, size)


def score(
    detections: pd.DataFrame,
    truth: pd.DataFrame,
    images: Sequence[str],
    classes: Sequence[str],
    conf: float = 0.0,
    iou: float = 0.5,
    size_edges: Sequence[float] = SIZE_EDGES,
) -> Scores:
    """Score the detections at or above ``conf`` against ``truth`` over ``images``: counts, P/R/F1, size buckets,
    false-positive kinds and the confusion matrix at IoU ``iou``, mAP50 and mAP50-95 over the same detections.

    The false-positive kinds and the confusion matrix take ``iou`` where the protocol says 0.5 (its default), so
    that the kinds always split the false positives of the matching they describe."""
    _require(detections, DETECTION_COLUMNS, "detections")
    detections = detections[detections["score"].to_numpy(np.float64) >= conf]
    scene = _scene(detections, truth, images)
    n_classes = len(classes)
    _check_classes(scene.det_cls, n_classes, "detections")
    _check_classes(scene.truth_cls, n_classes, "truth boxes")
    matchings = {threshold: scene.match(threshold) for threshold in dict.fromkeys(map(float, [*IOU_THRESHOLDS, iou]))}
    taken = matchings[float(iou)]
    truth_matched = np.zeros(scene.n_truth, bool)
    truth_matched[taken[taken >= 0]] = True

    tp = np.bincount(scene.det_cls[taken >= 0], minlength=n_classes)
    fp = np.bincount(scene.det_cls[taken < 0], minlength=n_classes)
    truth_count = np.bincount(scene.truth_cls, minlength=n_classes)
    fn = truth_count - tp
    precision, recall, f1 = _prf(np.append(tp, tp.sum()), np.append(fp, fp.sum()), np.append(fn, fn.sum()))

    by_rank = np.argsort(scene.det_rank)
    ap = np.full((n_classes, len(IOU_THRESHOLDS)), np.nan)
    for k in np.flatnonzero(truth_count):
        mine = by_rank[scene.det_cls[by_rank] == k]
        hits = np.stack([matchings[float(threshold)][mine] >= 0 for threshold in IOU_THRESHOLDS])
        ap[k] = _average_precision(hits, int(truth_count[k]))
    has_truth = truth_count > 0
    map50 = float(ap[has_truth, 0].mean()) if has_truth.any() else 0.0
    map50_95 = float(ap[has_truth].mean()) if has_truth.any() else 0.0

    per_class = [
        {
            "class": name,
            "truth": int(truth_count[k]),
            "tp": int(tp[k]),
            "fp": int(fp[k]),
            "fn": int(fn[k]),
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "ap50": float(ap[k, 0]) if has_truth[k] else None,
            "ap50_95": float(ap[k].mean()) if has_truth[k] else None,
        }
        for k, name in enumerate(classes)
    ]
    kinds = _kinds(scene, taken, iou)
    return Scores(
        conf=float(conf),
        iou=float(iou),
        images=len(pd.unique(np.asarray(list(images), dtype=object))),
        tp=int(tp.sum()),
        fp=int(fp.sum()),
        fn=int(fn.sum()),
        precision=float(precision[-1]),
        recall=float(recall[-1]),
        f1=float(f1[-1]),
        map50=map50,
        map50_95=map50_95,
        per_class=per_class,
        sizes=_sizes(scene, truth_matched, size_edges),
        fp_kinds={kind: int((kinds == kind).sum()) for kind in FP_KINDS},
        confusion=_confusion(scene, taken, truth_matched, iou, n_classes).tolist(),
        confusion_labels=[*classes, BACKGROUND],
    )
