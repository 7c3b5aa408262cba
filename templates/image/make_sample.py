"""Write sample.png (a mostly red picture) to try the classifier with (or to argv[1])."""

import sys
from pathlib import Path

from PIL import Image, ImageDraw


def make_sample(path: Path, colour=(200, 30, 40)) -> Path:
    image = Image.new("RGB", (64, 48), colour)
    ImageDraw.Draw(image).rectangle((8, 8, 24, 24), fill=(250, 250, 250))
    image.save(path)
    return path


if __name__ == "__main__":
    print(make_sample(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("sample.png")))
