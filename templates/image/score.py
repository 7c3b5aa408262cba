"""An image classifier: names the dominant colour of an uploaded picture (needs Pillow)."""

import io

from PIL import Image, ImageStat

CHANNELS = ("red", "green", "blue")


class Model:
    def __init__(self, model_dir, size=32, grey_margin=24):
        self.size = int(size)
        self.grey_margin = float(grey_margin)

    def predict(self, inputs, **kwargs):
        # input_spec has one file field, so an upload (multipart or raw image/*) arrives
        # here as {"image": <bytes>}.
        with Image.open(io.BytesIO(inputs["image"])) as image:
            small = image.convert("RGB").resize((self.size, self.size))
        mean = ImageStat.Stat(small).mean  # per channel: red, green, blue
        if max(mean) - min(mean) < self.grey_margin:
            label = "grey"
        else:
            label = CHANNELS[mean.index(max(mean))]
        return {"label": label, "mean_rgb": [round(c, 2) for c in mean]}
