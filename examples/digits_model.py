"""The demo model: a digit classifier trained on scikit-learn's bundled digits, served on MNIST-shaped input.

It takes `inputs`: a batch of 784 floats (28x28 pixels, 0-255, like MNIST and the seed's
num_3.json) and returns `proba` (10 scores) and `classes` (the digit), as the seed's output
shows. scikit-learn ships its 8x8 digits, so no data set is downloaded: the served function
crops each 28x28 image to its ink, pads it square and scales it to 8x8 0-16, the way the
8x8 digits were made, before the trained dense network sees it.

    python examples/digits_model.py OUT_DIR     # writes a SavedModel to OUT_DIR
"""
from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits


def _to_8x8(images: tf.Tensor) -> tf.Tensor:
    """[batch, 784] pixels 0-255 -> [batch, 64] values 0-16, cropped to the ink and squared."""

    def one(flat):
        image = tf.reshape(flat, [28, 28])
        ink = tf.where(image > 30.0)
        has_ink = tf.shape(ink)[0] > 0
        top = tf.cond(has_ink, lambda: tf.reduce_min(ink[:, 0]), lambda: tf.constant(0, tf.int64))
        bottom = tf.cond(has_ink, lambda: tf.reduce_max(ink[:, 0]), lambda: tf.constant(27, tf.int64))
        left = tf.cond(has_ink, lambda: tf.reduce_min(ink[:, 1]), lambda: tf.constant(0, tf.int64))
        right = tf.cond(has_ink, lambda: tf.reduce_max(ink[:, 1]), lambda: tf.constant(27, tf.int64))
        height, width = bottom - top + 1, right - left + 1
        side = tf.maximum(height, width)
        crop = image[top:bottom + 1, left:right + 1]
        pad_h, pad_w = side - height, side - width
        square = tf.pad(crop, [[pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2]])
        small = tf.image.resize(square[..., None], [8, 8], method="area", antialias=True)
        return tf.reshape(small, [64]) * (16.0 / 255.0)

    return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec([64], tf.float32))


def digits_as_mnist(count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits blown up to 28x28, 0-255 floats: sample inputs shaped like MNIST."""
    digits = load_digits()
    images = digits.images[:count] / 16.0 * 255.0
    big = np.kron(images, np.ones((3, 3)))  # 8x8 -> 24x24
    big = np.pad(big, ((0, 0), (2, 2), (2, 2)))
    return big.reshape(len(big), 784).astype(np.float32), digits.target[:count]


class DigitClassifier(tf.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        digits = load_digits()
        x, y = digits.data.astype(np.float32), digits.target
        tf.keras.utils.set_random_seed(seed)
        self.net = tf.keras.Sequential([
            tf.keras.Input([64]),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10),
        ])
        self.net.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                         metrics=["accuracy"])
        self.net.fit(x, y, epochs=40, batch_size=64, verbose=0)

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="inputs")])
    def serve(self, inputs):
        logits = self.net(_to_8x8(inputs))
        return {"proba": logits, "classes": tf.argmax(logits, axis=1)}


def export(directory: str) -> str:
    model = DigitClassifier()
    tf.saved_model.save(model, directory, signatures={"serving_default": model.serve})
    return directory


if __name__ == "__main__":
    export(sys.argv[1] if len(sys.argv) > 1 else "digits_savedmodel")
