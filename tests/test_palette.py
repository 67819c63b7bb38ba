import numpy as np
import pytest

from dlcv.data.palette import CLASS_NAMES, PALETTE, count_off_palette, decode_mask, encode_mask


def test_every_class_round_trips():
    classes = np.arange(len(CLASS_NAMES), dtype=np.uint8).reshape(1, -1).repeat(3, axis=0)
    assert np.array_equal(decode_mask(encode_mask(classes)), classes)
    assert encode_mask(classes).dtype == np.uint8


def test_palette_matches_the_course_colours():
    assert PALETTE.tolist() == [
        [0, 255, 255],
        [255, 255, 0],
        [255, 0, 255],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 255],
        [0, 0, 0],
    ]


@pytest.mark.parametrize(
    ("colour", "expected"),
    [
        ((255, 0, 0), 6),  # red is unknown, by the graders' rule
        ((128, 128, 127), 1),  # 128 counts as "on", 127 as "off": yellow, agriculture
        ((127, 200, 255), 0),  # cyan-ish: urban
        ((10, 10, 10), 6),
        ((250, 240, 130), 5),
        ((200, 30, 220), 2),
        ((0, 129, 0), 3),
        ((3, 2, 254), 4),
    ],
)
def test_off_palette_colours_map_by_threshold(colour, expected):
    rgb = np.array(colour, dtype=np.uint8).reshape(1, 1, 3)
    assert decode_mask(rgb)[0, 0] == expected


def test_count_off_palette():
    rgb = encode_mask(np.zeros((4, 4), dtype=np.uint8))
    assert count_off_palette(rgb) == 0
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (1, 255, 255)
    assert count_off_palette(rgb) == 2


def test_encode_rejects_bad_classes():
    with pytest.raises(ValueError):
        encode_mask(np.array([[7]]))
