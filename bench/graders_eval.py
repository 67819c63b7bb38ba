"""The course graders' mean-IoU script (mean_iou_evaluate.py), transcribed: the evaluator's baseline.

Every mask is stacked into one float64 array per folder, then each class takes a pass over all of
them. Kept as the graders wrote it (Pillow replaces imageio, which decodes PNGs the same way) so
that ``bench/eval_bench.py`` can time it as a whole process beside ``dlcv segment eval``.

    python bench/graders_eval.py --pred PRED_DIR --labels GT_DIR
"""

import argparse
import os

import numpy as np
from PIL import Image


def read_masks(filepath):
    file_list = [file for file in os.listdir(filepath) if file.endswith(".png")]
    file_list.sort()
    n_masks = len(file_list)
    masks = np.empty((n_masks, 512, 512))
    for i, file in enumerate(file_list):
        mask = np.array(Image.open(os.path.join(filepath, file)))
        mask = (mask >= 128).astype(int)
        mask = 4 * mask[:, :, 0] + 2 * mask[:, :, 1] + mask[:, :, 2]
        masks[i, mask == 3] = 0  # (Cyan: 011) Urban land
        masks[i, mask == 6] = 1  # (Yellow: 110) Agriculture land
        masks[i, mask == 5] = 2  # (Purple: 101) Rangeland
        masks[i, mask == 2] = 3  # (Green: 010) Forest land
        masks[i, mask == 1] = 4  # (Blue: 001) Water
        masks[i, mask == 7] = 5  # (White: 111) Barren land
        masks[i, mask == 0] = 6  # (Black: 000) Unknown
        masks[i, mask == 4] = 6  # (Red: 100) Unknown
    return masks


def mean_iou_score(pred, labels):
    mean_iou = 0
    for i in range(6):
        tp_fp = np.sum(pred == i)
        tp_fn = np.sum(labels == i)
        tp = np.sum((pred == i) * (labels == i))
        iou = tp / (tp_fp + tp_fn - tp)
        mean_iou += iou / 6
        print("class #%d : %1.5f" % (i, iou))  # noqa: UP031 (the graders' own format)
    print("\nmean_iou: %f\n" % mean_iou)  # noqa: UP031
    return mean_iou


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-g", "--labels", help="ground truth masks directory", type=str)
    parser.add_argument("-p", "--pred", help="prediction masks directory", type=str)
    args = parser.parse_args()
    pred = read_masks(args.pred)
    labels = read_masks(args.labels)
    mean_iou_score(pred, labels)
