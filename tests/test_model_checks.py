"""Hostile SavedModels are refused before anything loads or calls them; real models still serve.

Every model here is a real SavedModel built by TensorFlow (tests/hostile_models.py). The
refused ones would leave a trace if any of their ops ever ran (a marker file), and the tests
check that the trace is absent after inspection: refused means never loaded, never warmed up.
"""
from __future__ import annotations

import inspect
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.protobuf import saved_model_pb2

import hostile_models as hostile
import savedmodels
from chalicelib.scoring import graphcheck, savedmodel
from chalicelib.state import models

# builder -> (op named in the refusal, where it sits)
REFUSED = {
    "reads_environment": ("ReadFile", "in function"),
    "writes_a_file": ("WriteFile", "in function"),
    "writes_on_load": ("WriteFile", "in function __inference__initializer"),
    "lists_the_model_cache": ("MatchingFiles", "in function"),
    "reads_a_dataset": ("TextLineDataset", "in function"),
    "prints_to_a_file": ("PrintV2", "in function"),
    "calls_python": ("EagerPyFunc", "in function"),
    "maps_a_file": ("ImmutableConst", "in function"),
    "debug_sink": ("DebugIdentityV2", "in function"),
    "saves_a_checkpoint": ("SaveV2", "outside the saver's save function"),
    "restores_another_checkpoint": ("RestoreV2", "outside the loader's variable restore"),
    "table_from_a_path": ("InitializeTableFromTextFileV2", "not one of the model's own assets"),
    "table_from_the_input": ("InitializeTableFromTextFileV2", "not one of the model's own assets"),
    "hidden_in_a_branch": ("ReadFile", "in function __inference_steal"),
    "tf1_graph_reads_a_file": ("ReadFile", "in the graph, node 'steal'"),
    "asset_outside_the_model": ("asset '../../../../etc/passwd'", "plain name inside assets/"),
    "samples_from_a_file": ("FixedUnigramCandidateSampler", "not on the allow-list"),
    "forges_a_handle": ("ParseTensor", "decode bytes into a resource or variant"),
    "constant_handle": ("Const", "holds a resource or variant tensor"),
    "reads_uninitialised_memory": ("Empty", "uninitialised memory"),
    "tf1_asset_read_by_the_signature": ("InitializeTableFromTextFileV2", "outside the init op"),
    "tf1_asset_through_an_aliased_variable": ("InitializeTableFromTextFileV2", "not one of the model's own assets"),
    "tf1_save_run_at_load": ("SaveV2", "outside the saver's save function"),
    "tf1_restore_from_elsewhere": ("RestoreV2", "outside the loader's variable restore"),
    "saves_at_load_through_the_object_graph": ("SaveV2", "outside the saver's save function"),
    "restores_through_a_rebound_signature": ("RestoreV2", "outside the loader's variable restore"),
    "reads_a_path_through_a_rebound_signature": ("object graph", "without the concrete-function entry"),
}
ACCEPTED = ["vocabulary_table", "keras_string_lookup", "tf1_vocabulary_table"]


def _build(name: str, base: Path) -> tuple[Path, Path]:
    """The model's folder and the marker file its harmful op would write (removed after the
    build: building a TF2 resource runs its initializer once, in this test process)."""
    builder = getattr(hostile, name)
    directory, marker = base / name, base / f"{name}.marker"
    builder(directory, marker) if "marker" in inspect.signature(builder).parameters else builder(directory)
    marker.unlink(missing_ok=True)
    return directory, marker


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("hostile")
    return {name: _build(name, base) for name in [*REFUSED, *ACCEPTED]}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_each_hostile_family_is_refused_by_name_and_place(built, name):
    directory, marker = built[name]
    op, where = REFUSED[name]
    with pytest.raises(graphcheck.RefusedModel) as refused:
        savedmodel.check(directory)
    message = str(refused.value)
    assert op in message and where in message
    with pytest.raises(graphcheck.RefusedModel):
        savedmodel.load(directory)  # the scoring path checks again before it loads
    assert not marker.exists()


@pytest.mark.parametrize("name", ACCEPTED)
def test_vocabulary_models_from_their_own_assets_are_accepted_and_score(built, name):
    directory, _ = built[name]
    savedmodel.check(directory)
    signature = {s["name"]: s for s in savedmodel.read_signatures(directory)}["serving_default"]
    words = np.array(["cat", "fish", "zebra"], dtype=object)
    if name == "keras_string_lookup":
        words = words.reshape(-1, 1)
    model = savedmodel.load(directory).signatures[signature["name"]]
    (ids,) = [tensor.numpy().ravel().tolist() for tensor in model(**{"word": words}).values()]
    # Keras reserves 0 for out-of-vocabulary words; the tables answer -1.
    assert ids == ([1, 3, 0] if name == "keras_string_lookup" else [0, 2, -1])


@pytest.mark.parametrize("name", ["keras", "multi_io", "strings", "tf1_classify", "two_signatures"])
def test_the_models_users_already_publish_pass(model_dirs, name):
    savedmodel.check(model_dirs[name])


def test_refused_models_are_invalid_at_inspection_and_never_loaded(publish, built):
    for name in ["writes_a_file", "writes_on_load", "prints_to_a_file", "reads_environment"]:
        directory, marker = built[name]
        entity = publish(savedmodels.tar_gz(directory))
        assert entity["status"] == models.INVALID
        message = entity["latest_version"]["status_details"]["message"]
        assert message.startswith("The model cannot be served: The model uses operations")
        assert REFUSED[name][0] in message
        assert not marker.exists(), f"{name} ran during inspection"


def test_a_vocabulary_model_is_ready_at_inspection(publish, built):
    entity = publish(savedmodels.tar_gz(built["vocabulary_table"][0]))
    assert entity["status"] == models.READY
    assert entity["latest_version"]["signatures"][0]["inputs"] == [{"name": "word", "dtype": "string",
                                                                    "shape": [None]}]


def test_a_function_attribute_naming_an_undefined_function_is_refused(built, tmp_path):
    """A call to a function the library does not hold would run a kernel registered under that
    name: the model may only call what it ships, and what it ships is checked."""
    directory = tmp_path / "model"
    shutil.copytree(built["vocabulary_table"][0], directory)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    call = next(node for node in proto.meta_graphs[0].graph_def.node if node.op == "StatefulPartitionedCall")
    call.attr["f"].func.name = "SomeKernelNotInTheLibrary"
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    with pytest.raises(graphcheck.RefusedModel, match="names function 'SomeKernelNotInTheLibrary'"):
        savedmodel.check(directory)


@pytest.mark.parametrize("name, op", [("saves_at_load_through_the_object_graph", "SaveV2"),
                                      ("restores_through_a_rebound_signature", "RestoreV2"),
                                      ("reads_a_path_through_a_rebound_signature", "InitializeTableFromTextFileV2")])
def test_a_rebound_function_is_refused_by_its_op_even_with_a_declared_entry(built, tmp_path, name, op):
    """With a concrete-function entry declared for the rebound function (so the object graph is
    well formed), the function still counts as called by the loader or a scorer: its file op is
    refused where it sits."""
    directory = tmp_path / "model"
    shutil.copytree(built[name][0], directory)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].object_graph_def
    rebound = {obj.bare_concrete_function.concrete_function_name for obj in graph.nodes
               if obj.WhichOneof("kind") == "bare_concrete_function"} - set(graph.concrete_functions)
    assert len(rebound) == 1
    graph.concrete_functions[rebound.pop()].SetInParent()  # declared, binding nothing
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    with pytest.raises(graphcheck.RefusedModel) as refused:
        savedmodel.check(directory)
    assert op in str(refused.value) and "concrete-function entry" not in str(refused.value)


def test_a_load_past_its_time_limit_makes_the_version_invalid_and_frees_the_loader(publish, settings_env,
                                                                                    tmp_path, model_dirs):
    """Loading runs the model's initializers, which may compute for ever with allowed ops: the
    version is invalid at the limit, and the next version loads at once (the abandoned load does
    not hold the loader)."""
    from chalicelib.scoring import engine

    directory = hostile.loads_slowly(tmp_path / "slow")
    settings_env(TFBATCH_MODEL_LOAD_SECONDS="0.05")
    entity = publish(savedmodels.tar_gz(directory))
    assert entity["status"] == models.INVALID
    assert "TFBATCH_MODEL_LOAD_SECONDS" in entity["latest_version"]["status_details"]["message"]
    settings_env(TFBATCH_MODEL_LOAD_SECONDS="300")
    assert publish(savedmodels.tar_gz(model_dirs["strings"]))["status"] == models.READY
    while engine.calls_still_running():  # the abandoned load ends by itself: leave no thread behind
        threading.Event().wait(0.05)
