"""Reading SavedModels with TensorFlow: their serving signatures, and loading them.

Signatures are read from the MetaGraphDef (saved_model.pb) rather than from the loaded object,
because only the proto keeps what both TF1 SavedModelBuilder and TF2 exports record: the
method name (predict, classify, regress) and each tensor's dtype and shape. Every model is a
stranger's program: `load` checks its graphs against the op allow-list first, every time, so
no path can load a model that has not passed the check (`graphcheck`).
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2

from chalicelib.scoring import graphcheck

SERVING_TAG = "serve"
_INTERNAL_KEYS = {"__saved_model_init_op"}


def read_proto(model_dir: Path) -> saved_model_pb2.SavedModel:
    proto = saved_model_pb2.SavedModel()
    binary = model_dir / "saved_model.pb"
    if binary.exists():
        proto.ParseFromString(binary.read_bytes())
    else:
        text_format.Parse((model_dir / "saved_model.pbtxt").read_text(), proto)
    return proto


def _tensor(name: str, info) -> dict:
    shape = None if info.tensor_shape.unknown_rank else [
        None if dim.size < 0 else dim.size for dim in info.tensor_shape.dim
    ]
    return {"name": name, "dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": shape}


def read_signatures(model_dir: Path) -> list[dict]:
    """The serving signatures: name, method, and each input and output's dtype and shape."""
    proto = read_proto(model_dir)
    graphs = [graph for graph in proto.meta_graphs if SERVING_TAG in graph.meta_info_def.tags]
    if not graphs:
        raise ValueError("The SavedModel has no meta graph tagged 'serve'; save it with the SERVING tag.")
    signatures = []
    for key, definition in sorted(graphs[0].signature_def.items()):
        if key in _INTERNAL_KEYS:
            continue
        signatures.append({
            "name": key,
            "method_name": definition.method_name,
            "inputs": [_tensor(name, info) for name, info in sorted(definition.inputs.items())],
            "outputs": [_tensor(name, info) for name, info in sorted(definition.outputs.items())],
        })
    if not signatures:
        raise ValueError("The SavedModel's serving graph defines no signatures; export one to serve.")
    return signatures


def check(model_dir: Path) -> None:
    """Raise graphcheck.RefusedModel if any graph or function uses an op a model may not run."""
    graphcheck.check(read_proto(model_dir), model_dir / "assets")


def load(model_dir: Path):
    """Check, then load for serving (TF2 objects and TF1 graphs alike, through their 'serve' tag)."""
    check(model_dir)
    return tf.saved_model.load(str(model_dir), tags=[SERVING_TAG])
