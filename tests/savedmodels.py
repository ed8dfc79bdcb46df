"""Real SavedModels for the tests, written the ways users write them.

Each builder writes a small model into a folder and returns it: a Keras 3 export, a TF2
tf.Module with several inputs and outputs, one with string inputs, and a TF1
SavedModelBuilder graph with a CLASSIFY-style signature like the seed's.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from chalicelib.core import archives


def keras_export(directory: Path) -> Path:
    tf.keras.utils.set_random_seed(1)
    inputs = tf.keras.Input([4], name="features")
    outputs = tf.keras.layers.Dense(3, activation="softmax", name="scores")(inputs)
    tf.keras.Model(inputs, outputs).export(str(directory), verbose=False)
    return directory


class _TwoHeads(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.int64, name="b")])
    def serve(self, a, b):
        total = tf.reduce_sum(a, axis=1)
        return {"sum": total, "shifted": b + 1}


def multi_io(directory: Path) -> Path:
    module = _TwoHeads()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


class _Strings(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {"length": tf.strings.length(text), "upper": tf.strings.upper(text)}


def string_io(directory: Path) -> Path:
    module = _Strings()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def tf1_classify(directory: Path) -> Path:
    """A TF1 graph saved with SavedModelBuilder under the SERVING tag, as the seed describes."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        x = v1.placeholder(tf.float32, [None, 784], name="x_input_data")
        weights = tf.Variable(np.linspace(-1, 1, 7840, dtype=np.float32).reshape(784, 10), name="w")
        proba = tf.matmul(x, weights, name="proba")
        classes = tf.argmax(proba, axis=1, name="classes")
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(directory))
        signature = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"inputs": v1.saved_model.utils.build_tensor_info(x)},
            outputs={"proba": v1.saved_model.utils.build_tensor_info(proba),
                     "classes": v1.saved_model.utils.build_tensor_info(classes)},
            method_name=v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME,
        )
        builder.add_meta_graph_and_variables(session, [v1.saved_model.tag_constants.SERVING],
                                             signature_def_map={"serving_default": signature})
        builder.save()
    return directory


def tar_gz(directory: Path, top: str | None = "model") -> bytes:
    """The folder as a tar.gz, under one top-level folder (or at the archive's top)."""
    return archives.pack(directory, top)


def zipped(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            archive.write(path, str(path.relative_to(directory)))
    return buffer.getvalue()


class _TwoSignatures(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def double(self, x):
        return {"y": x * 2}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def negate(self, x):
        return {"y": -x}


def two_signatures(directory: Path) -> Path:
    """Two signatures and no serving_default: a deployment must name one."""
    module = _TwoSignatures()
    tf.saved_model.save(module, str(directory), signatures={"double": module.double, "negate": module.negate})
    return directory
