"""Model inspection with TensorFlow: real SavedModels in, signatures (or a clear reason) out."""
from __future__ import annotations

import io
import tarfile

import savedmodels
from chalicelib.state import models


def test_keras_export_is_ready_with_its_signatures(publish, model_dirs):
    entity = publish(savedmodels.tar_gz(model_dirs["keras"]))
    assert entity["status"] == models.READY
    signatures = {s["name"]: s for s in entity["latest_version"]["signatures"]}
    assert signatures["serving_default"]["inputs"] == [{"name": "features", "dtype": "float32", "shape": [None, 4]}]
    assert signatures["serving_default"]["outputs"] == [{"name": "output_0", "dtype": "float32", "shape": [None, 3]}]


def test_tf1_savedmodelbuilder_classify_signature(publish, model_dirs):
    entity = publish(savedmodels.tar_gz(model_dirs["tf1_classify"], top=None))
    assert entity["status"] == models.READY
    (signature,) = entity["latest_version"]["signatures"]
    assert signature["method_name"] == "tensorflow/serving/classify"
    assert signature["inputs"] == [{"name": "inputs", "dtype": "float32", "shape": [None, 784]}]
    assert {o["name"]: o["dtype"] for o in signature["outputs"]} == {"classes": "int64", "proba": "float32"}


def test_several_inputs_and_string_tensors(publish, model_dirs):
    multi = publish(savedmodels.tar_gz(model_dirs["multi_io"]))["latest_version"]["signatures"][0]
    assert [(i["name"], i["dtype"]) for i in multi["inputs"]] == [("a", "float32"), ("b", "int64")]
    strings = publish(savedmodels.tar_gz(model_dirs["strings"]))["latest_version"]["signatures"][0]
    assert strings["inputs"] == [{"name": "text", "dtype": "string", "shape": [None]}]


def test_zip_upload_inspects_the_same(publish, model_dirs):
    assert publish(savedmodels.zipped(model_dirs["multi_io"]))["status"] == models.READY


def test_a_model_that_does_not_load_is_invalid_with_the_reason(publish):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("model/saved_model.pb")
        junk = b"this is not a protocol buffer"
        info.size = len(junk)
        archive.addfile(info, io.BytesIO(junk))
    entity = publish(buffer.getvalue())
    assert entity["status"] == models.INVALID
    assert entity["latest_version"]["status_details"]["message"].startswith("The model cannot be served:")
